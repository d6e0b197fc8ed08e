//! The annotation store: one SQLite file (WAL mode, every commit synced) holding the candidates,
//! the pairs to judge, the annotators (tokens stored as SHA-256 hashes only) and their answers.
//!
//! An answer is a row keyed by (annotator, pair), so a repeated submission replaces rather than
//! duplicates; `seq` orders an annotator's answers for undo. Every query that reads or changes
//! answers is filtered by the annotator, so no one sees or changes another's.

use super::FeedbackError;
use super::records::{Candidate, Flag, Preference, Verdict, folder_of, read_candidates, relative_to};
use crate::io;
use rand::RngCore;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS candidates (idx INTEGER PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    candidate INTEGER NOT NULL REFERENCES candidates(idx),
    i INTEGER NOT NULL,
    j INTEGER NOT NULL,
    UNIQUE (candidate, i, j)
);
CREATE TABLE IF NOT EXISTS annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS answers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    annotator INTEGER NOT NULL REFERENCES annotators(id),
    pair INTEGER NOT NULL REFERENCES pairs(id),
    skipped INTEGER NOT NULL,
    q1 INTEGER,
    q2 INTEGER,
    flags_1 TEXT NOT NULL DEFAULT '[]',
    flags_2 TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (annotator, pair)
);
CREATE INDEX IF NOT EXISTS answers_by_pair ON answers (pair);
";

/// The pairs (`p`) open to annotator `?1`: neither answered nor skipped by them, and answered by
/// fewer than `?2` annotators.
const OPEN: &str = "NOT EXISTS (SELECT 1 FROM answers a WHERE a.pair = p.id AND a.annotator = ?1)
    AND (SELECT COUNT(*) FROM answers a WHERE a.pair = p.id AND a.skipped = 0) < ?2";

/// A signed-in annotator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Annotator {
    /// Row id.
    pub id: i64,
    /// Name given to `add-annotator`.
    pub name: String,
}

/// One annotator's answer on a pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Q1, which response has fewer hallucinations: 1, 2, or 0 for "the same".
    pub q1: u8,
    /// Q2, asked only when Q1 is 0: which response is more helpful, 1 or 2.
    #[serde(default)]
    pub q2: Option<u8>,
    /// Hallucinations flagged in response 1.
    #[serde(default)]
    pub flags_1: Vec<Flag>,
    /// Hallucinations flagged in response 2.
    #[serde(default)]
    pub flags_2: Vec<Flag>,
}

impl Answer {
    /// Why the answer is incomplete or contradictory, if it is.
    pub fn problem(&self) -> Option<String> {
        match (self.q1, self.q2) {
            (1 | 2, None) | (0, Some(1 | 2)) => None,
            (1 | 2, Some(_)) => Some("Q2 is asked only when Q1 is a tie".into()),
            (0, _) => Some("Q1 is a tie: Q2 (1 or 2) decides".into()),
            (q, _) => Some(format!("Q1 must be 0, 1 or 2, got {q}")),
        }
    }

    /// The same answer with the two responses in the other order.
    pub fn swapped(self) -> Answer {
        let other = |q: u8| if q == 0 { 0 } else { 3 - q };
        Answer { q1: other(self.q1), q2: self.q2.map(other), flags_1: self.flags_2, flags_2: self.flags_1 }
    }

    /// The preference and flags as a [`Verdict`].
    pub fn verdict(&self) -> Verdict {
        Verdict {
            preference: if self.q1 == 0 { self.q2.unwrap_or(1) } else { self.q1 },
            hallucination: self.q1 != 0,
            flags_1: self.flags_1.clone(),
            flags_2: self.flags_2.clone(),
        }
    }
}

/// A pair to judge, as the page shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    /// The pair's id.
    pub pair: i64,
    /// The candidate's id.
    pub id: String,
    /// The conversation up to the question (the reference answer left out).
    pub turns: Vec<crate::data::formats::Turn>,
    /// The two responses.
    pub responses: [String; 2],
    /// This annotator's answer, if any.
    pub answer: Option<Answer>,
}

/// How far an annotator is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// Pairs answered.
    pub answered: usize,
    /// Pairs skipped.
    pub skipped: usize,
    /// Pairs still open to this annotator.
    pub remaining: usize,
    /// All pairs.
    pub total: usize,
}

/// An answer as [`Store::export`] and [`Store::agreement`] read it.
struct StoredAnswer {
    annotator: String,
    candidate: i64,
    pair: (usize, usize),
    answer: Answer,
}

/// The store, open on one SQLite file.
pub struct Store {
    conn: Connection,
    /// How many annotators' answers a pair needs before it is offered to no one else.
    pub per_pair: usize,
}

/// SHA-256, hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A count or index column (non-negative by construction) as `usize`.
fn uint(r: &rusqlite::Row, column: usize) -> rusqlite::Result<usize> {
    Ok(usize::try_from(r.get::<_, i64>(column)?).unwrap_or(0))
}

/// The answer in the columns `q1, q2, flags_1, flags_2` from `first` on.
fn answer_at(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Answer> {
    let flags = |column: usize| -> rusqlite::Result<Vec<Flag>> {
        serde_json::from_str(&r.get::<_, String>(column)?).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
        })
    };
    Ok(Answer {
        q1: r.get(first)?,
        q2: r.get(first + 1)?,
        flags_1: flags(first + 2)?,
        flags_2: flags(first + 3)?,
    })
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, FeedbackError> {
        let conn = Connection::open(path)?;
        // WAL lets the page read while an answer is written; synchronous=FULL syncs every commit,
        // so an answer acknowledged to the page survives a crash or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn, per_pair: 1 })
    }

    fn meta(&self, key: &str) -> Result<Option<String>, FeedbackError> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    /// Loads a candidates file (every pair of two different responses becomes an item). A store holds one
    /// candidates file: loading the same file again does nothing, another one is refused.
    pub fn load_candidates(&mut self, path: &Path) -> Result<usize, FeedbackError> {
        let bytes = std::fs::read(path).map_err(io::at(path))?;
        let digest = sha256_hex(&bytes);
        if let Some(known) = self.meta("candidates_sha256")? {
            if known == digest {
                return Ok(self.conn.query_row("SELECT COUNT(*) FROM pairs", [], |r| uint(r, 0))?);
            }
            return Err(FeedbackError::Setting(format!(
                "the store holds another candidates file ({}); use a new --db for {}",
                self.meta("candidates")?.unwrap_or_default(),
                path.display()
            )));
        }
        let records = read_candidates(path, 2)?;
        let source = folder_of(path).canonicalize().map_err(io::at(folder_of(path)))?;
        let tx = self.conn.transaction()?;
        let mut pairs = 0;
        for (idx, c) in records.iter().enumerate() {
            let json = serde_json::to_string(c).map_err(|e| FeedbackError::Setting(e.to_string()))?;
            tx.execute("INSERT INTO candidates (idx, record) VALUES (?1, ?2)", params![idx as i64, json])?;
            for (i, j) in c.distinct_pairs() {
                tx.execute(
                    "INSERT INTO pairs (candidate, i, j) VALUES (?1, ?2, ?3)",
                    params![idx as i64, i as i64, j as i64],
                )?;
                pairs += 1;
            }
        }
        for (key, value) in [
            ("candidates_sha256", digest),
            ("candidates", path.display().to_string()),
            ("source_dir", source.to_string_lossy().into_owned()),
        ] {
            tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", params![key, value])?;
        }
        tx.commit()?;
        Ok(pairs)
    }

    /// Adds an annotator and returns their token, which is stored only as a hash: shown once.
    pub fn add_annotator(&self, name: &str) -> Result<String, FeedbackError> {
        if name.trim().is_empty() || name.len() > 64 {
            return Err(FeedbackError::Setting("an annotator's name must be 1 to 64 characters".into()));
        }
        let mut bytes = [0u8; 32];
        // ThreadRng is a CSPRNG seeded by the operating system.
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.conn
            .execute(
                "INSERT INTO annotators (name, token_sha256) VALUES (?1, ?2)",
                params![name, sha256_hex(token.as_bytes())],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    FeedbackError::Setting(format!("an annotator named {name:?} exists already"))
                }
                e => e.into(),
            })?;
        Ok(token)
    }

    /// The annotator a token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<Option<Annotator>, FeedbackError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name FROM annotators WHERE token_sha256 = ?1",
                [sha256_hex(token.as_bytes())],
                |r| Ok(Annotator { id: r.get(0)?, name: r.get(1)? }),
            )
            .optional()?)
    }

    fn candidate(&self, idx: i64) -> Result<Candidate, FeedbackError> {
        let json: String =
            self.conn.query_row("SELECT record FROM candidates WHERE idx = ?1", [idx], |r| r.get(0))?;
        serde_json::from_str(&json)
            .map_err(|e| FeedbackError::Setting(format!("stored candidate {idx}: {e}")))
    }

    fn pair(&self, pair: i64) -> Result<Option<(Candidate, usize, usize)>, FeedbackError> {
        let row = self
            .conn
            .query_row("SELECT candidate, i, j FROM pairs WHERE id = ?1", [pair], |r| {
                Ok((r.get::<_, i64>(0)?, uint(r, 1)?, uint(r, 2)?))
            })
            .optional()?;
        row.map(|(c, i, j)| Ok((self.candidate(c)?, i, j))).transpose()
    }

    /// The pair `pair` as the annotator sees it (with their own answer only); `None` if no such pair.
    pub fn item(&self, who: &Annotator, pair: i64) -> Result<Option<Item>, FeedbackError> {
        let Some((c, i, j)) = self.pair(pair)? else { return Ok(None) };
        let answer = self
            .conn
            .query_row(
                "SELECT q1, q2, flags_1, flags_2 FROM answers WHERE annotator = ?1 AND pair = ?2 AND skipped = 0",
                params![who.id, pair],
                |r| answer_at(r, 0),
            )
            .optional()?;
        Ok(Some(Item {
            pair,
            id: c.id.clone(),
            turns: c.context().to_vec(),
            responses: [c.responses[i].clone(), c.responses[j].clone()],
            answer,
        }))
    }

    /// The absolute path of the image of `pair`.
    pub fn image(&self, pair: i64) -> Result<Option<PathBuf>, FeedbackError> {
        let source = self.meta("source_dir")?.unwrap_or_default();
        Ok(self.pair(pair)?.map(|(c, _, _)| Path::new(&source).join(c.image)))
    }

    /// The first pair this annotator has neither answered nor skipped and that fewer than
    /// `per_pair` annotators have answered.
    pub fn next(&self, who: &Annotator) -> Result<Option<Item>, FeedbackError> {
        let pair = self
            .conn
            .query_row(
                &format!("SELECT p.id FROM pairs p WHERE {OPEN} ORDER BY p.id LIMIT 1"),
                params![who.id, self.per_pair as i64],
                |r| r.get::<_, i64>(0),
            )
            .optional()?;
        pair.map(|p| self.item(who, p)).transpose().map(Option::flatten)
    }

    /// Stores the annotator's answer on `pair` (replacing an earlier one), or a skip when `answer`
    /// is `None`; returns false if there is no such pair. Returns once the answer is on disk.
    pub fn record(
        &mut self,
        who: &Annotator,
        pair: i64,
        answer: Option<&Answer>,
    ) -> Result<bool, FeedbackError> {
        if let Some(problem) = answer.and_then(Answer::problem) {
            return Err(FeedbackError::Setting(problem));
        }
        let tx = self.conn.transaction()?;
        if tx.query_row("SELECT COUNT(*) FROM pairs WHERE id = ?1", [pair], |r| r.get::<_, i64>(0))? == 0 {
            return Ok(false);
        }
        // Delete then insert, so the replaced answer becomes the annotator's latest (undo's target).
        tx.execute("DELETE FROM answers WHERE annotator = ?1 AND pair = ?2", params![who.id, pair])?;
        let json = |f: &[Flag]| serde_json::to_string(f).unwrap_or_else(|_| "[]".into());
        match answer {
            Some(a) => tx.execute(
                "INSERT INTO answers (annotator, pair, skipped, q1, q2, flags_1, flags_2) VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
                params![who.id, pair, a.q1, a.q2, json(&a.flags_1), json(&a.flags_2)],
            )?,
            None => tx.execute("INSERT INTO answers (annotator, pair, skipped) VALUES (?1, ?2, 1)", params![who.id, pair])?,
        };
        tx.commit()?;
        Ok(true)
    }

    /// Removes the annotator's latest answer or skip and returns its pair, or `None` if they have
    /// none.
    pub fn undo(&mut self, who: &Annotator) -> Result<Option<i64>, FeedbackError> {
        let tx = self.conn.transaction()?;
        let last = tx
            .query_row(
                "SELECT seq, pair FROM answers WHERE annotator = ?1 ORDER BY seq DESC LIMIT 1",
                [who.id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .optional()?;
        if let Some((seq, _)) = last {
            tx.execute("DELETE FROM answers WHERE seq = ?1", [seq])?;
        }
        tx.commit()?;
        Ok(last.map(|(_, pair)| pair))
    }

    /// The annotator's progress.
    pub fn progress(&self, who: &Annotator) -> Result<Progress, FeedbackError> {
        let mine = |skipped: bool| -> rusqlite::Result<usize> {
            self.conn.query_row(
                "SELECT COUNT(*) FROM answers WHERE annotator = ?1 AND skipped = ?2",
                params![who.id, skipped],
                |r| uint(r, 0),
            )
        };
        Ok(Progress {
            answered: mine(false)?,
            skipped: mine(true)?,
            remaining: self.conn.query_row(
                &format!("SELECT COUNT(*) FROM pairs p WHERE {OPEN}"),
                params![who.id, self.per_pair as i64],
                |r| uint(r, 0),
            )?,
            total: self.conn.query_row("SELECT COUNT(*) FROM pairs", [], |r| uint(r, 0))?,
        })
    }

    /// Every answer (skips left out), by pair, then annotator.
    fn answers(&self) -> Result<Vec<StoredAnswer>, FeedbackError> {
        let mut stmt = self.conn.prepare(
            "SELECT n.name, p.candidate, p.i, p.j, a.q1, a.q2, a.flags_1, a.flags_2
             FROM answers a JOIN pairs p ON p.id = a.pair JOIN annotators n ON n.id = a.annotator
             WHERE a.skipped = 0 ORDER BY p.id, n.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredAnswer {
                annotator: r.get(0)?,
                candidate: r.get(1)?,
                pair: (uint(r, 2)?, uint(r, 3)?),
                answer: answer_at(r, 4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Writes every answer as a `prefs.json` record (one per annotator and pair) to `output`,
    /// atomically; returns the number of records.
    pub fn export(&self, output: &Path) -> Result<usize, FeedbackError> {
        let source = PathBuf::from(self.meta("source_dir")?.unwrap_or_default());
        let out_dir = folder_of(output);
        std::fs::create_dir_all(out_dir).map_err(io::at(out_dir))?;
        let mut prefs = Vec::new();
        for a in self.answers()? {
            let c = self.candidate(a.candidate)?;
            let image = relative_to(&source.join(&c.image), out_dir)?;
            prefs.push(Preference::new(&c, image, a.pair, a.answer.verdict(), &a.annotator));
        }
        io::write_json(output, &prefs)?;
        Ok(prefs.len())
    }

    /// Agreement between annotators on the pairs that several answered.
    pub fn agreement(&self) -> Result<super::agreement::Agreement, FeedbackError> {
        let labels = self.answers()?.into_iter().map(|a| {
            let v = a.answer.verdict();
            ((a.candidate, a.pair), a.annotator, v.preference, v.hallucination)
        });
        Ok(super::agreement::agreement(labels))
    }
}
