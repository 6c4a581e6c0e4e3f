//! Who is wrong: the pure decision of a scrub round, from the checksums of the live replicas and
//! of the reference replica at one checksum marker.

use tern_proto::archive::ItemsChecksum;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every replica matches (the reference, when there is one).
    Agree,
    /// These replicas' items are wrong; the others hold what they should.
    Bad(Vec<String>),
    /// No way to tell who is right: no reference and no majority, or every replica agrees with
    /// the others and not with the reference (then the archive itself may be wrong).
    Undecided(String),
}

/// The reference, rebuilt from the archive, is the truth when there is one: replicas that differ
/// from it are bad even if they are the majority. Without it, the majority is.
pub fn judge(replicas: &[(String, ItemsChecksum)], reference: Option<ItemsChecksum>) -> Verdict {
    let differ = |truth: ItemsChecksum| -> Vec<String> {
        replicas
            .iter()
            .filter(|(_, c)| *c != truth)
            .map(|(n, _)| n.clone())
            .collect()
    };
    if let Some(r) = reference {
        let bad = differ(r);
        if bad.is_empty() {
            return Verdict::Agree;
        }
        if bad.len() == replicas.len() && replicas.len() > 1 && differ(replicas[0].1).is_empty() {
            return Verdict::Undecided(
                "every replica agrees with the others and differs from the reference".into(),
            );
        }
        if bad.len() == replicas.len() {
            return Verdict::Undecided("no replica matches the reference".into());
        }
        return Verdict::Bad(bad);
    }
    for (_, c) in replicas {
        let bad = differ(*c);
        if bad.is_empty() {
            return Verdict::Agree;
        }
        if 2 * (replicas.len() - bad.len()) > replicas.len() {
            return Verdict::Bad(bad);
        }
    }
    Verdict::Undecided("no reference and no majority among the replicas".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(hash: u64) -> ItemsChecksum {
        ItemsChecksum {
            items: 1,
            bytes: 1,
            hash,
        }
    }

    fn reps(hashes: &[u64]) -> Vec<(String, ItemsChecksum)> {
        hashes
            .iter()
            .enumerate()
            .map(|(i, h)| (format!("n{i}"), sum(*h)))
            .collect()
    }

    #[test]
    fn the_odd_one_out_is_bad_without_a_reference() {
        assert_eq!(judge(&reps(&[1, 1, 1]), None), Verdict::Agree);
        assert_eq!(
            judge(&reps(&[1, 2, 1]), None),
            Verdict::Bad(vec!["n1".into()])
        );
        assert!(matches!(
            judge(&reps(&[1, 2, 3]), None),
            Verdict::Undecided(_)
        ));
        assert!(matches!(judge(&reps(&[1, 2]), None), Verdict::Undecided(_)));
    }

    #[test]
    fn the_reference_outvotes_a_wrong_majority() {
        assert_eq!(judge(&reps(&[1, 1, 1]), Some(sum(1))), Verdict::Agree);
        // Two replicas agree on a wrong value: the one that is right is not blamed.
        assert_eq!(
            judge(&reps(&[2, 1, 2]), Some(sum(1))),
            Verdict::Bad(vec!["n0".into(), "n2".into()])
        );
        assert_eq!(
            judge(&reps(&[1, 3, 1]), Some(sum(1))),
            Verdict::Bad(vec!["n1".into()])
        );
        assert!(matches!(
            judge(&reps(&[2, 2, 2]), Some(sum(1))),
            Verdict::Undecided(_)
        ));
        assert!(matches!(
            judge(&reps(&[2, 3, 4]), Some(sum(1))),
            Verdict::Undecided(_)
        ));
    }
}
