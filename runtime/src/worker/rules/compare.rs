//! Filter comparison: `<column value> <operator> <rule value>` on PostgreSQL's text output, in
//! PostgreSQL's order for the column's type (see [`super::Rules`] for the rules by type). Pure;
//! values that do not parse make the comparison false.

use std::cmp::Ordering;

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
    float4: Option<Float>,
    float8: Option<Float>,
    boolean: Option<bool>,
    date: Option<Moment>,
    local: Option<Moment>,
    instant: Option<Moment>,
}

impl Filter {
    pub(super) fn new(op: FilterOperator, text: String) -> Filter {
        Filter {
            op,
            num: Num::parse(text.as_bytes()),
            float4: Float::parse4(text.as_bytes()),
            float8: Float::parse8(text.as_bytes()),
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
            Class::Numeric => cmp_parsed(self.op, Num::parse(value), self.num.as_ref()),
            Class::Float4 => cmp_parsed(self.op, Float::parse4(value), self.float4),
            Class::Float8 => cmp_parsed(self.op, Float::parse8(value), self.float8),
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

fn cmp_parsed<T: Ord, R: std::borrow::Borrow<T>>(
    op: FilterOperator,
    value: Option<T>,
    rule: Option<R>,
) -> bool {
    match (value, rule) {
        (Some(v), Some(r)) => holds(op, v.cmp(r.borrow())),
        _ => false,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// How a column's values compare, by type OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    /// Integers and `numeric`: exact decimals.
    Numeric,
    /// `float4`: the rule value is rounded to a 32-bit float.
    Float4,
    /// `float8`: the rule value is rounded to a 64-bit float.
    Float8,
    Bool,
    Date,
    Timestamp,
    Timestamptz,
    Bytes,
}

impl Class {
    pub(super) fn of(type_oid: u32) -> Class {
        match type_oid {
            // int2, int4, int8, oid, numeric
            21 | 23 | 20 | 26 | 1700 => Class::Numeric,
            700 => Class::Float4,
            701 => Class::Float8,
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

/// A special value of a number's text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    /// `infinity`, `inf`, YAML's `.inf` (any case).
    Infinity,
    /// `nan`, YAML's `.nan` (any case).
    NaN,
}

/// A number's text trimmed, its sign (`true`: negative), the text after the sign, and which
/// special value that is, if any. `None` for empty or non-UTF-8 text.
fn signed(bytes: &[u8]) -> Option<(&str, bool, &str, Option<Special>)> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let special = match body.to_ascii_lowercase().as_str() {
        "infinity" | "inf" | ".inf" => Some(Special::Infinity),
        "nan" | ".nan" => Some(Special::NaN),
        _ => None,
    };
    Some((s, neg, body, special))
}

impl Num {
    fn parse(bytes: &[u8]) -> Option<Num> {
        let (s, neg, body, special) = signed(bytes)?;
        match special {
            Some(Special::Infinity) => return Some(if neg { Num::NegInf } else { Num::PosInf }),
            // NaN has no sign (PostgreSQL refuses `-NaN` for numeric).
            Some(Special::NaN) if body.len() == s.len() => return Some(Num::NaN),
            Some(Special::NaN) => return None,
            None => {}
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

/// A `float4` or `float8` value (held as an `f64`), ordered as PostgreSQL orders floats:
/// `-0 = 0`, NaN equals NaN and is above every other value.
#[derive(Clone, Copy, Debug)]
struct Float(f64);

impl Float {
    /// A `float4`: the text rounded to the nearest 32-bit float, as PostgreSQL's `float4in`.
    fn parse4(bytes: &[u8]) -> Option<Float> {
        Float::parse(bytes, |s| s.parse::<f32>().ok().map(f64::from))
    }

    /// A `float8`: the text rounded to the nearest 64-bit float, as PostgreSQL's `float8in`.
    fn parse8(bytes: &[u8]) -> Option<Float> {
        Float::parse(bytes, |s| s.parse::<f64>().ok())
    }

    /// Decimal notation (`1.5`, `-2e-3`, `.5`), `NaN`, `Infinity`, `inf` (any case, signed),
    /// YAML's `.inf` / `.nan`. A finite number beyond the type's range, or a non-zero one that
    /// rounds to zero, is refused (PostgreSQL refuses it as out of range).
    fn parse(bytes: &[u8], round: impl FnOnce(&str) -> Option<f64>) -> Option<Float> {
        let (s, neg, body, special) = signed(bytes)?;
        match special {
            Some(Special::Infinity) => {
                return Some(Float(if neg {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                }))
            }
            Some(Special::NaN) => return Some(Float(f64::NAN)),
            None => {}
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        let v = round(s)?;
        let mantissa = body.split(['e', 'E']).next().unwrap_or_default();
        let underflow = v == 0.0 && mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'));
        (v.is_finite() && !underflow).then_some(Float(v))
    }
}

impl Ord for Float {
    fn cmp(&self, other: &Float) -> Ordering {
        match (self.0.is_nan(), other.0.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal),
        }
    }
}

impl PartialOrd for Float {
    fn partial_cmp(&self, other: &Float) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Float {
    fn eq(&self, other: &Float) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Float {}

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
enum Moment {
    NegInf,
    /// Days (dates) or microseconds (timestamps) since 2000-01-01, PostgreSQL's epoch.
    At(i64),
    PosInf,
}

const USECS_PER_DAY: i64 = 86_400_000_000;
/// Julian day number of 2000-01-01.
const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
/// Julian day number of the first day after the last `date` (5874898-01-01).
const DATE_END_JULIAN: i64 = 2_147_483_494;
/// Julian day number of the first day after the last `timestamp` (294277-01-01).
const TIMESTAMP_END_JULIAN: i64 = 109_203_528;
/// The largest UTC offset PostgreSQL reads: 15:59:59.
const MAX_OFFSET_HOURS: i64 = 15;

/// A date with an optional time of day and UTC offset, as PostgreSQL prints and reads them
/// (`2024-03-20`, `2024-03-20 10:00:00.5+05:30`, `0044-03-15 BC`) or RFC 3339.
struct DateTimeText {
    /// Days since 2000-01-01.
    day: i64,
    /// Microseconds since midnight (up to a whole day: `24:00:00` is the next midnight).
    time: Option<i64>,
    /// Seconds east of UTC.
    offset: Option<i64>,
}

fn parse_moment(bytes: &[u8], f: impl FnOnce(DateTimeText) -> Option<i64>) -> Option<Moment> {
    let s = std::str::from_utf8(bytes).ok()?.trim();
    match s.to_ascii_lowercase().as_str() {
        "infinity" => return Some(Moment::PosInf),
        "-infinity" => return Some(Moment::NegInf),
        _ => {}
    }
    parse_datetime_text(s).and_then(f).map(Moment::At)
}

/// A date; a value with a time of day or an offset is refused (SQL would drop them).
fn parse_date(bytes: &[u8]) -> Option<Moment> {
    parse_moment(bytes, |t| {
        let julian = t.day + POSTGRES_EPOCH_JDATE;
        (t.time.is_none() && t.offset.is_none() && (0..DATE_END_JULIAN).contains(&julian))
            .then_some(t.day)
    })
}

/// Wall-clock date-time; an offset is ignored (as PostgreSQL's cast to `timestamp` does).
fn parse_timestamp(bytes: &[u8]) -> Option<Moment> {
    parse_moment(bytes, |t| in_timestamp_range(local_micros(&t)?))
}

/// The instant in UTC; a value without an offset is taken as UTC.
fn parse_timestamptz(bytes: &[u8]) -> Option<Moment> {
    parse_moment(bytes, |t| {
        let offset = t.offset.unwrap_or(0).checked_mul(1_000_000)?;
        in_timestamp_range(local_micros(&t)?.checked_sub(offset)?)
    })
}

fn local_micros(t: &DateTimeText) -> Option<i64> {
    t.day
        .checked_mul(USECS_PER_DAY)?
        .checked_add(t.time.unwrap_or(0))
}

/// `micros` if it is within PostgreSQL's timestamp range (4714-11-24 00:00 BC to 294276 AD).
fn in_timestamp_range(micros: i64) -> Option<i64> {
    let min = -POSTGRES_EPOCH_JDATE * USECS_PER_DAY;
    let end = (TIMESTAMP_END_JULIAN - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY;
    (min..end).contains(&micros).then_some(micros)
}

/// PostgreSQL's `date2j`: the Julian day number of a proleptic Gregorian date (astronomical
/// year: 0 is 1 BC).
fn date2j(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month > 2 {
        (year + 4800, month + 1)
    } else {
        (year + 4799, month + 13)
    };
    let century = y.div_euclid(100);
    y * 365 - 32167 + y.div_euclid(4) - century + century.div_euclid(4) + 7834 * m / 256 + day
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]][ ][offset]][ BC]`, checked as PostgreSQL checks it.
/// The year has 3 to 7 digits (PostgreSQL reads a two-digit year as 19xx/20xx or by
/// `DateStyle`; such values are refused here).
fn parse_datetime_text(s: &str) -> Option<DateTimeText> {
    let (s, bc) = match s.len().checked_sub(3).and_then(|at| s.split_at_checked(at)) {
        Some((rest, era)) if era.eq_ignore_ascii_case(" bc") => (rest.trim_end(), true),
        _ => (s, false),
    };
    let (date, rest) = match s.find([' ', 'T', 't']) {
        Some(at) => (&s[..at], s[at + 1..].trim_start()),
        None => (s, ""),
    };
    let mut parts = date.splitn(3, '-');
    let year = number(parts.next()?, 3..=7)?;
    let month = number(parts.next()?, 1..=2)?;
    let day = number(parts.next()?, 1..=2)?;
    if year == 0 {
        return None; // there is no year 0 in AD/BC notation
    }
    let year = if bc { 1 - year } else { year };
    // PostgreSQL's IS_VALID_JULIAN: from November 4714 BC to May 5874898.
    let julian_ok = (year > -4713 || (year == -4713 && month >= 11))
        && (year < 5_874_898 || (year == 5_874_898 && month < 6));
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) || !julian_ok {
        return None;
    }
    let day = date2j(year, month, day) - POSTGRES_EPOCH_JDATE;
    if rest.is_empty() {
        return Some(DateTimeText {
            day,
            time: None,
            offset: None,
        });
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, zone) = (&rest[..end], rest[end..].trim());
    Some(DateTimeText {
        day,
        time: Some(parse_time(time)?),
        offset: if zone.is_empty() {
            None
        } else {
            Some(parse_offset(zone)?)
        },
    })
}

/// `HH:MM[:SS[.fraction]]` -> microseconds since midnight. As PostgreSQL: the fraction is
/// rounded to microseconds (`rint(strtod(".fraction") * 1e6)`), `24:00:00` and second 60
/// (`23:59:60`) are accepted, and the time may not pass 24:00:00.
fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let h = number(parts.next()?, 1..=2)?;
    let m = number(parts.next()?, 1..=2)?;
    let (sec, micros) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let micros = if frac.is_empty() {
                0
            } else {
                if !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let f: f64 = format!("0.{frac}").parse().ok()?;
                // In [0, 1e6] by construction, so the cast is exact.
                (f * 1e6).round_ties_even() as i64
            };
            (number(whole, 1..=2)?, micros)
        }
    };
    if h > 24 || m > 59 || sec > 60 {
        return None;
    }
    let total = ((h * 60 + m) * 60 + sec) * 1_000_000 + micros;
    (total <= USECS_PER_DAY).then_some(total)
}

/// `Z`, `+H`, `+HH`, `+HHMM`, `+HH:MM`, `+HH:MM:SS` -> seconds east of UTC, as PostgreSQL's
/// `DecodeTimezone` reads them (at most 15:59:59).
fn parse_offset(s: &str) -> Option<i64> {
    if s.eq_ignore_ascii_case("z") {
        return Some(0);
    }
    let (sign, body) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m, sec) = if body.contains(':') {
        let mut fields = body.splitn(3, ':');
        let h = number(fields.next()?, 1..=2)?;
        let m = number(fields.next()?, 1..=2)?;
        let sec = fields.next().map_or(Some(0), |f| number(f, 1..=2))?;
        (h, m, sec)
    } else {
        let n = number(body, 1..=4)?;
        // `+0530` and `+530` are hours and minutes, `+05` and `+5` hours.
        if body.len() > 2 {
            (n / 100, n % 100, 0)
        } else {
            (n, 0, 0)
        }
    };
    (h <= MAX_OFFSET_HOURS && m < 60 && sec < 60).then_some(sign * ((h * 60 + m) * 60 + sec))
}

/// A field of ASCII digits, with a digit count in `len`.
fn number(s: &str, len: std::ops::RangeInclusive<usize>) -> Option<i64> {
    if !len.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
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
        for bad in [
            "",
            "-",
            ".",
            "1e",
            "1.2.3",
            "12a",
            "e5",
            ".e5",
            "1e99999999999",
            "-NaN",
            "+nan",
        ] {
            assert_eq!(Num::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn julian_days_match_postgres_constants() {
        for (y, m, d, julian) in [
            (2000, 1, 1, POSTGRES_EPOCH_JDATE),
            (-4713, 11, 24, 0),
            (5_874_898, 1, 1, DATE_END_JULIAN),
            (294_277, 1, 1, TIMESTAMP_END_JULIAN),
            (1970, 1, 1, 2_440_588),
            (0, 2, 29, 1_721_119), // 1 BC, a leap year: to_char(date, 'J')
        ] {
            assert_eq!(date2j(y, m, d), julian, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn times_and_offsets_as_postgres_reads_them() {
        let us = |h: i64, m: i64, s: i64, f: i64| ((h * 60 + m) * 60 + s) * 1_000_000 + f;
        for (text, want) in [
            ("10:00", Some(us(10, 0, 0, 0))),
            ("10:00:00.", Some(us(10, 0, 0, 0))),
            ("10:00:00.1234565", Some(us(10, 0, 0, 123_456))),
            ("10:00:00.0000005", Some(us(10, 0, 0, 0))),
            ("10:00:00.9999995", Some(us(10, 0, 1, 0))),
            ("24:00:00", Some(USECS_PER_DAY)),
            ("23:59:60", Some(USECS_PER_DAY)),
            ("24:00:00.0000001", Some(USECS_PER_DAY)),
            ("24:00:00.000001", None),
            ("23:59:60.000001", None),
            ("10:60", None),
            ("10:00:61", None),
            ("10", None),
            ("10:00.5", None),
            ("10:00:00:00", None),
        ] {
            assert_eq!(parse_time(text), want, "{text}");
        }
        for (text, want) in [
            ("Z", Some(0)),
            ("+5", Some(18_000)),
            ("+05", Some(18_000)),
            ("+530", Some(19_800)),
            ("-0530", Some(-19_800)),
            ("+5:3", Some(18_180)),
            ("+00:19:32", Some(1172)),
            ("+15:59:59", Some(57_599)),
            ("+16", None),
            ("+05:60", None),
            ("+12345", None),
            ("05:30", None),
            ("UTC", None),
        ] {
            assert_eq!(parse_offset(text), want, "{text}");
        }
    }

    #[test]
    fn float_ordering() {
        let f = |s: &str| Float::parse8(s.as_bytes()).unwrap();
        assert_eq!(f("-0"), f("0"));
        assert_eq!(f("NaN"), f(".nan"));
        assert!(f("Infinity") < f("NaN") && f("-inf") < f("-1.7976931348623157e308"));
        assert_eq!(f("0.1"), f("0.10000000000000001"));
        let g = |s: &str| Float::parse4(s.as_bytes()).unwrap();
        assert_eq!(g("0.1"), g("0.100000001"));
        assert!(g("0.1") < g("0.1000001"));
        for bad in ["1e400", "1e-400", "0x10", "1,5", "", "e1"] {
            assert!(Float::parse8(bad.as_bytes()).is_none(), "{bad}");
        }
        assert!(Float::parse4(b"1e39").is_none() && Float::parse4(b"1e-46").is_none());
        assert!(Float::parse4(b"1e-45").is_some() && Float::parse8(b"5e-324").is_some());
    }
}
