//! Filter comparison: `<column value> <operator> <rule value>` on PostgreSQL's text output, in
//! PostgreSQL's order for the column's type (see [`super::Rules`] for the rules by type). Pure;
//! values that do not parse make the comparison false.

use std::cmp::Ordering;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use pg_flo_config::rules::FilterOperator;

/// Whether `column.cmp(value) == ord` satisfies the operator (`contains` is no ordering).
fn holds(op: FilterOperator, ord: Ordering) -> bool {
    match op {
        FilterOperator::Eq => ord == Ordering::Equal,
        FilterOperator::Ne => ord != Ordering::Equal,
        FilterOperator::Gt => ord == Ordering::Greater,
        FilterOperator::Lt => ord == Ordering::Less,
        FilterOperator::Gte => ord != Ordering::Less,
        FilterOperator::Lte => ord != Ordering::Greater,
        FilterOperator::Contains => false,
    }
}

/// A filter with its rule value pre-parsed for every kind of column.
#[derive(Debug)]
pub(super) struct Filter {
    op: FilterOperator,
    text: String,
    num: Option<Num>,
    boolean: Option<bool>,
    date: Option<Moment<NaiveDate>>,
    local: Option<Moment<NaiveDateTime>>,
    instant: Option<Moment<NaiveDateTime>>,
}

impl Filter {
    pub(super) fn new(op: FilterOperator, text: String) -> Filter {
        Filter {
            op,
            num: Num::parse(text.as_bytes()),
            boolean: parse_bool(text.as_bytes()),
            date: parse_date(text.as_bytes()),
            local: parse_timestamp(text.as_bytes()),
            instant: parse_timestamptz(text.as_bytes()),
            text,
        }
    }

    /// Whether a (non-NULL) column value of the given class passes the filter.
    pub(super) fn matches(&self, class: Class, value: &[u8]) -> bool {
        if self.op == FilterOperator::Contains {
            return contains(value, self.text.as_bytes());
        }
        match class {
            Class::Numeric => match (Num::parse(value), &self.num) {
                (Some(v), Some(r)) => holds(self.op, v.cmp(r)),
                _ => false,
            },
            Class::Bool => match (parse_bool(value), self.boolean) {
                (Some(v), Some(r)) => match self.op {
                    FilterOperator::Eq => v == r,
                    FilterOperator::Ne => v != r,
                    _ => false,
                },
                _ => false,
            },
            Class::Date => cmp_parsed(self.op, parse_date(value), self.date),
            Class::Timestamp => cmp_parsed(self.op, parse_timestamp(value), self.local),
            Class::Timestamptz => cmp_parsed(self.op, parse_timestamptz(value), self.instant),
            Class::Bytes => holds(self.op, value.cmp(self.text.as_bytes())),
        }
    }
}

fn cmp_parsed<T: Ord>(op: FilterOperator, value: Option<T>, rule: Option<T>) -> bool {
    match (value, rule) {
        (Some(v), Some(r)) => holds(op, v.cmp(&r)),
        _ => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// How a column's values compare, by type OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Numeric,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Bytes,
}

impl Class {
    pub(super) fn of(type_oid: u32) -> Class {
        match type_oid {
            // int2, int4, int8, oid, numeric, float4, float8
            21 | 23 | 20 | 26 | 1700 | 700 | 701 => Class::Numeric,
            16 => Class::Bool,
            1082 => Class::Date,
            1114 => Class::Timestamp,
            1184 => Class::Timestamptz,
            _ => Class::Bytes,
        }
    }
}

/// text, varchar, bpchar, name: the types transforms rewrite.
pub(super) fn is_text_like(type_oid: u32) -> bool {
    matches!(type_oid, 25 | 1043 | 1042 | 19)
}

/// An exact decimal number (or PostgreSQL's infinities and NaN), ordered as PostgreSQL orders
/// `numeric`: -Infinity < finite < Infinity < NaN, NaN = NaN.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Num {
    NegInf,
    /// `(-1)^neg × 0.d1d2d3… × 10^exp`; `digits` has no leading or trailing zeros; zero has no
    /// digits, `neg = false` and `exp = 0`.
    Finite {
        neg: bool,
        exp: i64,
        digits: Vec<u8>,
    },
    PosInf,
    NaN,
}

impl Num {
    fn parse(bytes: &[u8]) -> Option<Num> {
        let s = std::str::from_utf8(bytes).ok()?.trim();
        let (neg, body) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        match body.to_ascii_lowercase().as_str() {
            "infinity" | "inf" | ".inf" => {
                return Some(if neg { Num::NegInf } else { Num::PosInf })
            }
            "nan" | ".nan" => return Some(Num::NaN),
            _ => {}
        }
        let (mantissa, exp) = match body.find(['e', 'E']) {
            Some(at) => {
                let e = &body[at + 1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                (&body[..at], i64::from(e.parse::<i32>().ok()?))
            }
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.len() + frac.len() == 0
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
        let lead = all.iter().take_while(|b| **b == b'0').count();
        let mut digits = all.get(lead..).unwrap_or_default().to_vec();
        while digits.last() == Some(&b'0') {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Num::Finite {
                neg: false,
                exp: 0,
                digits,
            });
        }
        let exp = i64::try_from(int.len()).ok()? + exp - i64::try_from(lead).ok()?;
        Some(Num::Finite { neg, exp, digits })
    }

    fn rank(&self) -> u8 {
        match self {
            Num::NegInf => 0,
            Num::Finite { neg: true, .. } => 1,
            Num::Finite { digits, .. } if digits.is_empty() => 2,
            Num::Finite { .. } => 3,
            Num::PosInf => 4,
            Num::NaN => 5,
        }
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Num) -> Ordering {
        match (self, other) {
            (
                Num::Finite {
                    neg: an,
                    exp: ae,
                    digits: ad,
                },
                Num::Finite {
                    neg: bn,
                    exp: be,
                    digits: bd,
                },
            ) if an == bn && !ad.is_empty() && !bd.is_empty() => {
                // Same sign, both non-zero: magnitude by exponent, then digits (no trailing
                // zeros, so a prefix is the smaller number).
                let magnitude = ae.cmp(be).then_with(|| ad.cmp(bd));
                if *an {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Num) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn parse_bool(bytes: &[u8]) -> Option<bool> {
    let s = std::str::from_utf8(bytes).ok()?.trim().to_ascii_lowercase();
    match s.as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A point in time, or PostgreSQL's `-infinity` / `infinity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Moment<T> {
    NegInf,
    At(T),
    PosInf,
}

/// A date with an optional time of day and UTC offset (seconds east), as PostgreSQL prints
/// them (`2024-03-20`, `2024-03-20 10:00:00.5+05:30`, `0044-03-15 BC`) or RFC 3339.
struct DateTimeText {
    date: NaiveDate,
    time: Option<NaiveTime>,
    offset: Option<i32>,
}

fn parse_moment<T>(bytes: &[u8], f: impl FnOnce(DateTimeText) -> Option<T>) -> Option<Moment<T>> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(Moment::PosInf),
        "-infinity" => return Some(Moment::NegInf),
        _ => {}
    }
    parse_datetime_text(s).and_then(f).map(Moment::At)
}

fn parse_date(bytes: &[u8]) -> Option<Moment<NaiveDate>> {
    parse_moment(bytes, |t| {
        (t.time.is_none() && t.offset.is_none()).then_some(t.date)
    })
}

/// Wall-clock date-time; an offset is ignored (as PostgreSQL's cast to `timestamp` does).
fn parse_timestamp(bytes: &[u8]) -> Option<Moment<NaiveDateTime>> {
    parse_moment(bytes, |t| {
        Some(t.date.and_time(t.time.unwrap_or(NaiveTime::MIN)))
    })
}

/// The instant in UTC; a value without an offset is taken as UTC.
fn parse_timestamptz(bytes: &[u8]) -> Option<Moment<NaiveDateTime>> {
    parse_moment(bytes, |t| {
        let local = t.date.and_time(t.time.unwrap_or(NaiveTime::MIN));
        let offset = TimeDelta::try_seconds(i64::from(t.offset.unwrap_or(0)))?;
        local.checked_sub_signed(offset)
    })
}

fn parse_datetime_text(s: &str) -> Option<DateTimeText> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest.trim_end(), true),
        None => (s, false),
    };
    let (date, rest) = match s.find([' ', 'T', 't']) {
        Some(at) => (&s[..at], s[at + 1..].trim_start()),
        None => (s, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if [y, m, d]
        .iter()
        .any(|p| p.is_empty() || p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut year: i32 = y.parse().ok()?;
    if bc {
        year = 1 - year;
    }
    let date = NaiveDate::from_ymd_opt(year, m.parse().ok()?, d.parse().ok()?)?;
    if rest.is_empty() {
        return Some(DateTimeText {
            date,
            time: None,
            offset: None,
        });
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = (&rest[..end], rest[end..].trim());
    Some(DateTimeText {
        date,
        time: Some(parse_time(time)?),
        offset: if zone.is_empty() {
            None
        } else {
            Some(parse_offset(zone)?)
        },
    })
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    let mut parts = s.splitn(3, ':');
    let h: u32 = digits(parts.next()?)?;
    let m: u32 = digits(parts.next()?)?;
    let (sec, nano) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            if !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut nano = 0u32;
            for (i, b) in frac.bytes().take(9).enumerate() {
                nano += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
            }
            (digits(whole)?, nano)
        }
    };
    NaiveTime::from_hms_nano_opt(h, m, sec, nano)
}

/// `Z`, `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` -> seconds east of UTC.
fn parse_offset(s: &str) -> Option<i32> {
    if s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, body) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let fields: Vec<&str> = if body.contains(':') {
        body.split(':').collect()
    } else if body.len() == 4 {
        vec![&body[..2], &body[2..]]
    } else {
        vec![body]
    };
    if fields.is_empty() || fields.len() > 3 || fields.iter().any(|f| f.len() != 2) {
        return None;
    }
    let mut secs = 0i32;
    for (f, unit) in fields.iter().zip([3600, 60, 1]) {
        let v: i32 = digits(f)?;
        secs += v * unit;
    }
    Some(sign * secs)
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_ordering() {
        let n = |s: &str| Num::parse(s.as_bytes()).unwrap();
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("000.000"), n("-0"));
        assert_eq!(n("1e3"), n("1000"));
        assert!(n("0.99") < n("1"));
        assert!(n("-1") < n("-0.99"));
        assert!(n("-1e10") < n("-1e9"));
        assert!(n("12") < n("12.0001"));
        assert!(
            n("-Infinity") < n("-1e308") && n("1e308") < n("Infinity") && n("Infinity") < n("NaN")
        );
        for bad in ["", "-", ".", "1e", "1.2.3", "12a", "e5", "1e99999999999"] {
            assert_eq!(Num::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
