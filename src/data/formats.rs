//! Record types of the field's public formats, so that factrl reads and writes files other tools use.

use serde::{Deserialize, Serialize};

/// Who speaks a turn of a LLaVA conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// The user (`"human"`).
    #[serde(rename = "human")]
    Human,
    /// The assistant (`"gpt"`).
    #[serde(rename = "gpt")]
    Gpt,
}

/// One turn: `{"from": "human" | "gpt", "value": text}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// Speaker.
    pub from: Role,
    /// Text; the first human turn starts with `<image>\n`.
    pub value: String,
}

impl Turn {
    /// A user turn.
    pub fn human(value: impl Into<String>) -> Turn {
        Turn { from: Role::Human, value: value.into() }
    }

    /// An assistant turn.
    pub fn gpt(value: impl Into<String>) -> Turn {
        Turn { from: Role::Gpt, value: value.into() }
    }
}

/// The kind of question a record asks; factrl's own extra field, ignored by other LLaVA tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A short caption (pretraining and SFT).
    Caption,
    /// A detailed description of every object.
    Description,
    /// "Is there a ... in the image?"
    Existence,
    /// "How many ...?"
    Counting,
    /// Colour, shape or size of an object.
    Attribute,
    /// Spatial relations and positions.
    Relation,
    /// A/B/C/D multiple choice.
    MultipleChoice,
    /// Several of the above in one conversation.
    MultiTurn,
}

impl Task {
    /// The snake_case name, as serialised.
    pub fn name(self) -> &'static str {
        match self {
            Task::Caption => "caption",
            Task::Description => "description",
            Task::Existence => "existence",
            Task::Counting => "counting",
            Task::Attribute => "attribute",
            Task::Relation => "relation",
            Task::MultipleChoice => "multiple_choice",
            Task::MultiTurn => "multi_turn",
        }
    }
}

/// A LLaVA conversation record: `{id, image, conversations}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// Unique id.
    pub id: String,
    /// Image path, relative to the folder of the file that holds the record.
    pub image: String,
    /// Alternating human / gpt turns, human first.
    pub conversations: Vec<Turn>,
    /// What kind of question this is (factrl's extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// The fact-augmented reward model's facts for this prompt (factrl's extra field; preference
    /// prompts carry them, training records do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captions: Option<Vec<String>>,
}

/// Which symbolic correctness check applies to a PPO prompt, numbered as LLaVA-RLHF's `AnswerType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum CaptionType {
    /// 1: no symbolic check.
    #[default]
    General,
    /// 2..=5: multiple choice whose right option is A, B, C or D (0..=3).
    Choice(u8),
    /// 6: a yes/no question whose truth is "No".
    No,
    /// 7: a yes/no question whose truth is "Yes".
    Yes,
}

impl From<CaptionType> for u8 {
    fn from(t: CaptionType) -> u8 {
        match t {
            CaptionType::General => 1,
            CaptionType::Choice(i) => 2 + i,
            CaptionType::No => 6,
            CaptionType::Yes => 7,
        }
    }
}

impl TryFrom<u8> for CaptionType {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(CaptionType::General),
            2..=5 => Ok(CaptionType::Choice(v - 2)),
            6 => Ok(CaptionType::No),
            7 => Ok(CaptionType::Yes),
            _ => Err(format!("caption_type {v} is not one of 1 (general), 2-5 (A-D), 6 (no), 7 (yes)")),
        }
    }
}

/// A PPO prompt as LLaVA-RLHF's PPO data has it: a conversation plus the image's captions, the
/// symbolic check and the length-bonus multiplier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PpoPrompt {
    /// Unique id.
    pub id: String,
    /// Image path, relative to the file's folder.
    pub image: String,
    /// The human turn(s) to answer; a trailing gpt turn, if any, is a reference answer.
    pub conversations: Vec<Turn>,
    /// Short true captions of the image (the reward model's facts).
    pub captions: Vec<String>,
    /// Which correctness check applies.
    #[serde(default)]
    pub caption_type: CaptionType,
    /// Multiplier of the length term `length_bonus_score * len / max_len` (negative rewards length).
    #[serde(default = "one")]
    pub length_bonus: f64,
    /// What kind of question this is (factrl's extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
}

fn one() -> f64 {
    1.0
}

/// A POPE label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// The object is present.
    Yes,
    /// The object is absent.
    No,
}

/// One line of a POPE question file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PopeQuestion {
    /// 1-based, counting on across images.
    pub question_id: u64,
    /// Image path, relative to the file's folder.
    pub image: String,
    /// "Is there a {object} in the image?"
    pub text: String,
    /// Ground truth.
    pub label: YesNo,
}

/// One MMHal-Bench record (the fields of its `response_template.json`, without `model_answer`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmhalRecord {
    /// attribute, adversarial, comparison, counting, relation, environment, holistic or other.
    pub question_type: String,
    /// The image's topic.
    pub question_topic: String,
    /// Image id.
    pub image_id: String,
    /// Image path, relative to the file's folder.
    pub image_src: String,
    /// Names of the objects in the image.
    pub image_content: Vec<String>,
    /// The question.
    pub question: String,
    /// A correct, informative answer.
    pub gt_answer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_are_the_serialised_ones() {
        for t in [
            Task::Caption,
            Task::Description,
            Task::Existence,
            Task::Counting,
            Task::Attribute,
            Task::Relation,
            Task::MultipleChoice,
            Task::MultiTurn,
        ] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
    }

    #[test]
    fn caption_type_uses_llava_rlhf_numbers() {
        for (t, n) in [
            (CaptionType::General, 1u8),
            (CaptionType::Choice(0), 2),
            (CaptionType::Choice(3), 5),
            (CaptionType::No, 6),
            (CaptionType::Yes, 7),
        ] {
            assert_eq!(serde_json::to_string(&t).unwrap(), n.to_string());
            assert_eq!(serde_json::from_str::<CaptionType>(&n.to_string()).unwrap(), t);
        }
        assert!(serde_json::from_str::<CaptionType>("8").is_err());
    }

    #[test]
    fn ppo_prompt_defaults_as_llava_rlhf() {
        let p: PpoPrompt = serde_json::from_str(
            r#"{"id": "1", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nhi"}], "captions": []}"#,
        )
        .unwrap();
        assert_eq!(p.caption_type, CaptionType::General);
        assert_eq!(p.length_bonus, 1.0);
    }
}
