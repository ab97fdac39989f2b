//! Kubernetes quantities (`10Gi`, `500M`, `1.5Gi`, `1e9`) as whole bytes: the operator sizes
//! NATS's file store and stream from the volume size and `GOMEMLIMIT` from the memory limit.

/// The value of a Kubernetes quantity in whole units (bytes), rounded down; `None` for text
/// that is not a non-negative quantity or is beyond `u64`.
///
/// Grammar (apimachinery's `resource.Quantity`): a decimal number (`1`, `1.5`, `.5`, `1.`)
/// followed by a binary suffix (`Ki` `Mi` `Gi` `Ti` `Pi` `Ei`), a decimal suffix (`m` `k` `M`
/// `G` `T` `P` `E`, or none) or a decimal exponent (`e3`, `E-2`).
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let q = q.strip_prefix('+').unwrap_or(q);
    let end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    // number = digits / 10^scale
    let digits: u128 = format!("{int}{frac}").parse().ok()?;
    let scale = u32::try_from(frac.len()).ok()?;
    // value = digits * num / (10^scale * den)
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        "m" => (1, 1000),
        "k" => (10u128.pow(3), 1),
        "M" => (10u128.pow(6), 1),
        "G" => (10u128.pow(9), 1),
        "T" => (10u128.pow(12), 1),
        "P" => (10u128.pow(15), 1),
        "E" => (10u128.pow(18), 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..]
                .strip_prefix('+')
                .unwrap_or(&exp[1..])
                .parse()
                .ok()?;
            if e.unsigned_abs() > 30 {
                return None;
            }
            if e >= 0 {
                (10u128.pow(e.unsigned_abs()), 1)
            } else {
                (1, 10u128.pow(e.unsigned_abs()))
            }
        }
        _ => return None,
    };
    let value = digits.checked_mul(num)? / 10u128.checked_pow(scale)?.checked_mul(den)?;
    u64::try_from(value).ok()
}

/// `percent`% of `bytes`, rounded down.
pub fn percent_of(bytes: u64, percent: u64) -> u64 {
    u64::try_from(u128::from(bytes) * u128::from(percent) / 100).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        let cases: [(&str, Option<u64>); 22] = [
            ("1Gi", Some(1 << 30)),
            ("10Gi", Some(10 << 30)),
            ("1024Mi", Some(1 << 30)),
            ("1.5Gi", Some(3 << 29)),
            (".5Ki", Some(512)),
            ("1.Ki", Some(1024)),
            ("500M", Some(500_000_000)),
            ("1G", Some(1_000_000_000)),
            ("2k", Some(2000)),
            ("1e9", Some(1_000_000_000)),
            ("1E3", Some(1000)),
            ("15e-1", Some(1)),
            ("1500m", Some(1)),
            ("123", Some(123)),
            ("+1Ki", Some(1024)),
            ("8Ei", Some(8 << 60)),
            ("16Ei", None),
            ("-1Gi", None),
            ("1GB", None),
            ("Gi", None),
            ("1.2.3", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(quantity_bytes(q), want, "{q}");
        }
    }

    #[test]
    fn percentages_round_down() {
        assert_eq!(percent_of(1 << 30, 90), 966_367_641);
        assert_eq!(percent_of(1 << 30, 80), 858_993_459);
        assert_eq!(percent_of(u64::MAX, 100), u64::MAX);
    }
}
