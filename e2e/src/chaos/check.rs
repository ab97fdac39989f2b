//! Whether a sink's output holds every change of the source, in source order, and what else it
//! holds. Pure.

use std::collections::{HashMap, HashSet};

/// A sink's output against the source's committed changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Changes the source committed.
    pub expected: usize,
    /// Of those, how many the output holds in order (the longest prefix).
    pub delivered: usize,
    /// Output changes already delivered before (a repeat).
    pub duplicates: usize,
    /// Output changes out of source order or unknown to the source (forged, corrupted or
    /// misattributed): the first few, described.
    pub diverged: Vec<String>,
    /// How many output changes diverged in all.
    pub diverged_count: usize,
}

impl Verdict {
    /// Changes not (yet) delivered.
    pub fn missing(&self) -> usize {
        self.expected - self.delivered
    }

    /// Everything delivered, in order, nothing foreign.
    pub fn complete(&self) -> bool {
        self.missing() == 0 && self.diverged_count == 0
    }
}

/// Walks `output` against `truth`: an output change is the next expected one (delivered), one
/// delivered before (a duplicate, as a redelivery repeats a suffix), or diverged: a change the
/// source committed later than the next expected one (the ones between were skipped or
/// reordered), or one the source never committed.
pub fn check_sequence(truth: &[String], output: &[String]) -> Verdict {
    let position: HashMap<&str, usize> = truth
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut verdict = Verdict {
        expected: truth.len(),
        ..Verdict::default()
    };
    for (n, change) in output.iter().enumerate() {
        let next = truth.get(verdict.delivered);
        if next == Some(change) {
            seen.insert(change);
            verdict.delivered += 1;
        } else if seen.contains(change.as_str()) {
            verdict.duplicates += 1;
        } else {
            verdict.diverged_count += 1;
            if verdict.diverged.len() < 5 {
                let why = match (position.get(change.as_str()), next) {
                    (Some(at), Some(next)) => format!(
                        "output #{n} {change:?} is source change #{at}, but #{} {next:?} was expected first",
                        verdict.delivered
                    ),
                    _ => format!("output #{n} {change:?} is no change the source committed"),
                };
                verdict.diverged.push(why);
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn outputs_against_the_truth() {
        let truth = v(&["a", "b", "c", "d"]);
        // (output, delivered, duplicates, diverged)
        let cases: [(&[&str], usize, usize, usize); 9] = [
            (&["a", "b", "c", "d"], 4, 0, 0),
            (&["a", "b"], 2, 0, 0),
            (&[], 0, 0, 0),
            // A redelivered suffix: duplicates, allowed where the sink says so.
            (&["a", "b", "c", "b", "c", "d"], 4, 2, 0),
            (&["a", "a", "a", "b", "c", "d", "d"], 4, 3, 0),
            // A change skipped: what follows it diverges, the gap stays missing.
            (&["a", "c", "d"], 1, 0, 2),
            // Reordered.
            (&["a", "c", "b", "d"], 2, 0, 2),
            // Foreign.
            (&["a", "x", "b", "c", "d"], 4, 0, 1),
            (&["b"], 0, 0, 1),
        ];
        for (output, delivered, duplicates, diverged) in cases {
            let got = check_sequence(&truth, &v(output));
            assert_eq!(
                (got.delivered, got.duplicates, got.diverged_count),
                (delivered, duplicates, diverged),
                "{output:?}: {got:?}"
            );
            assert_eq!(got.missing(), 4 - delivered);
            assert_eq!(got.complete(), delivered == 4 && diverged == 0);
        }
    }

    #[test]
    fn a_divergence_is_described_by_position() {
        let got = check_sequence(&v(&["a", "b", "c"]), &v(&["a", "c", "z"]));
        assert_eq!(
            got.diverged,
            [
                "output #1 \"c\" is source change #2, but #1 \"b\" was expected first",
                "output #2 \"z\" is no change the source committed",
            ]
        );
    }
}
