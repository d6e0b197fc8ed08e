//! Agreement between annotators on the pairs that more than one judged: percent agreement on the
//! preference and on whether it was decided on hallucinations, and Cohen's kappa per two annotators.

use serde::Serialize;
use std::collections::BTreeMap;

/// Agreement of two annotators on the pairs both judged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairAgreement {
    /// One annotator.
    pub a: String,
    /// The other.
    pub b: String,
    /// Pairs both judged.
    pub items: usize,
    /// Share of those with the same preference.
    pub agreement: f64,
    /// Cohen's kappa on the preference; `None` when chance agreement is 1 (both always chose the
    /// same side).
    pub kappa: Option<f64>,
}

/// `factrl annotate stats`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Agreement {
    /// Pairs judged by two or more annotators.
    pub overlapping_items: usize,
    /// Two-annotator comparisons on those pairs.
    pub comparisons: usize,
    /// Share of comparisons with the same preference (`None` without any).
    pub preference_agreement: Option<f64>,
    /// Share of comparisons that agree on whether Q1 decided (the `hallucination` field).
    pub hallucination_agreement: Option<f64>,
    /// Per two annotators, by name.
    pub by_annotators: Vec<PairAgreement>,
}

/// Cohen's kappa of two raters' labels on the same items: `(p_o - p_e) / (1 - p_e)`, with `p_o`
/// the observed agreement and `p_e = sum_k p_a(k) p_b(k)` the agreement expected by chance from
/// each rater's label shares. `None` when `p_e` is 1 (or there are no items).
pub fn cohen_kappa(a: &[u8], b: &[u8]) -> Option<f64> {
    let n = a.len().min(b.len());
    if n == 0 {
        return None;
    }
    let share = |labels: &[u8], k: u8| labels[..n].iter().filter(|&&l| l == k).count() as f64 / n as f64;
    let p_o = a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / n as f64;
    let mut kinds: Vec<u8> = a[..n].iter().chain(&b[..n]).copied().collect();
    kinds.sort_unstable();
    kinds.dedup();
    let p_e: f64 = kinds.iter().map(|&k| share(a, k) * share(b, k)).sum();
    (p_e < 1.0 - 1e-12).then(|| (p_o - p_e) / (1.0 - p_e))
}

/// Agreement from `(item, annotator, preference, decided on Q1)` labels (one per annotator and item).
pub fn agreement<K: Ord>(labels: impl IntoIterator<Item = (K, String, u8, bool)>) -> Agreement {
    let mut by_item: BTreeMap<K, Vec<(String, u8, bool)>> = BTreeMap::new();
    for (item, name, preference, q1) in labels {
        by_item.entry(item).or_default().push((name, preference, q1));
    }
    // Per two annotators (names in order): both preference lists.
    let mut pairs: BTreeMap<(String, String), (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    let (mut comparisons, mut same, mut same_q1, mut overlapping) = (0, 0, 0, 0);
    for answers in by_item.values_mut().filter(|v| v.len() > 1) {
        overlapping += 1;
        answers.sort_by(|x, y| x.0.cmp(&y.0));
        for (k, x) in answers.iter().enumerate() {
            for y in &answers[k + 1..] {
                comparisons += 1;
                same += usize::from(x.1 == y.1);
                same_q1 += usize::from(x.2 == y.2);
                let e = pairs.entry((x.0.clone(), y.0.clone())).or_default();
                e.0.push(x.1);
                e.1.push(y.1);
            }
        }
    }
    let share = |n: usize| (comparisons > 0).then(|| n as f64 / comparisons as f64);
    Agreement {
        overlapping_items: overlapping,
        comparisons,
        preference_agreement: share(same),
        hallucination_agreement: share(same_q1),
        by_annotators: pairs
            .into_iter()
            .map(|((a, b), (x, y))| PairAgreement {
                items: x.len(),
                agreement: x.iter().zip(&y).filter(|(p, q)| p == q).count() as f64 / x.len() as f64,
                kappa: cohen_kappa(&x, &y),
                a,
                b,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappa_by_hand() {
        // p_o = 4/5; p_a(1) = 3/5, p_b(1) = 2/5, p_a(2) = 2/5, p_b(2) = 3/5;
        // p_e = 6/25 + 6/25 = 0.48; kappa = (0.8 - 0.48) / 0.52 = 0.615384...
        let k = cohen_kappa(&[1, 1, 2, 2, 1], &[1, 2, 2, 2, 1]).unwrap();
        assert!((k - 0.32 / 0.52).abs() < 1e-12, "{k}");
        assert_eq!(cohen_kappa(&[1, 2], &[1, 2]), Some(1.0));
        // Both always pick 1: chance agreement is 1, kappa undefined.
        assert_eq!(cohen_kappa(&[1, 1], &[1, 1]), None);
        assert_eq!(cohen_kappa(&[], &[]), None);
    }

    #[test]
    fn only_overlapping_items_count() {
        let l = |item: u32, who: &str, p: u8, q1: bool| (item, who.to_string(), p, q1);
        let a = agreement([
            l(1, "ann", 1, true),
            l(1, "bob", 1, false),
            l(2, "bob", 2, true),
            l(2, "ann", 1, true),
            l(3, "ann", 2, true),
            l(4, "ann", 1, true),
            l(4, "bob", 1, true),
            l(4, "cy", 2, true),
        ]);
        assert_eq!((a.overlapping_items, a.comparisons), (3, 5));
        // Same preference: item 1 (ann-bob), item 4 (ann-bob); Q1 the same: 2, 4 (all three).
        assert_eq!(a.preference_agreement, Some(2.0 / 5.0));
        assert_eq!(a.hallucination_agreement, Some(4.0 / 5.0));
        let names: Vec<(&str, &str, usize)> =
            a.by_annotators.iter().map(|p| (p.a.as_str(), p.b.as_str(), p.items)).collect();
        assert_eq!(names, [("ann", "bob", 3), ("ann", "cy", 1), ("bob", "cy", 1)]);
        assert_eq!(a.by_annotators[0].agreement, 2.0 / 3.0);
    }
}
