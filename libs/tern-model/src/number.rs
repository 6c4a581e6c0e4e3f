//! DynamoDB numbers: up to 38 significant digits, magnitude between 1E-130 and 9.99…E+125.

use std::cmp::Ordering;

use crate::error::{ApiError, Result};

/// A validated number, held as sign, significant digits and exponent:
/// value = ±0.d1d2…dn × 10^exp, d1 ≠ 0 and dn ≠ 0 (zero has no digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Number {
    negative: bool,
    digits: Vec<u8>,
    exp: i32,
    canonical: String,
}

const MAX_DIGITS: usize = 38;
/// Largest exponent in the 0.d… form: 9.99…E+125 = 0.999…E+126.
const MAX_EXP: i32 = 126;
/// Smallest: 1E-130 = 0.1E-129.
const MIN_EXP: i32 = -129;

fn not_a_number() -> ApiError {
    ApiError::validation("A value provided cannot be converted into a number")
}

impl Number {
    pub fn parse(s: &str) -> Result<Number> {
        let t = s.trim();
        let (negative, rest) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return Err(not_a_number());
        }
        let e: i64 = match exponent {
            Some(x) if !x.is_empty() && x.len() < 12 => x.parse().map_err(|_| not_a_number())?,
            Some(_) => return Err(not_a_number()),
            None => 0,
        };
        let raw: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let Some(first) = raw.iter().position(|d| *d != 0) else {
            return Ok(Number::zero());
        };
        let last = raw
            .iter()
            .rposition(|d| *d != 0)
            .expect("has a non-zero digit");
        let digits = raw[first..=last].to_vec();
        // value = 0.raw × 10^(int.len()), shifted by leading zeros and the exponent.
        let exp = int.len() as i64 - first as i64 + e;
        if digits.len() > MAX_DIGITS {
            return Err(ApiError::validation(
                "Attempting to store more than 38 significant digits in a Number",
            ));
        }
        if exp > MAX_EXP as i64 {
            return Err(ApiError::validation(
                "Number overflow. Attempting to store a number with magnitude larger than supported range",
            ));
        }
        if exp < MIN_EXP as i64 {
            return Err(ApiError::validation(
                "Number underflow. Attempting to store a number with magnitude smaller than supported range",
            ));
        }
        let exp = exp as i32;
        let canonical = render(negative, &digits, exp);
        Ok(Number {
            negative,
            digits,
            exp,
            canonical,
        })
    }

    fn zero() -> Number {
        Number {
            negative: false,
            digits: Vec::new(),
            exp: 0,
            canonical: "0".into(),
        }
    }

    /// The canonical decimal form, as DynamoDB returns it (no exponent, no redundant zeros).
    pub fn as_str(&self) -> &str {
        &self.canonical
    }

    /// Count of significant digits.
    pub fn significant_digits(&self) -> usize {
        self.digits.len()
    }

    /// Bytes whose memcmp order is the numeric order.
    pub fn order_key(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.digits.len() + 4);
        if self.digits.is_empty() {
            out.push(0x02);
            return out;
        }
        let biased = (self.exp + 1000) as u16;
        if self.negative {
            out.push(0x01);
            out.extend_from_slice(&(!biased).to_be_bytes());
            out.extend(self.digits.iter().map(|d| 10 - d));
            out.push(0xFF);
        } else {
            out.push(0x03);
            out.extend_from_slice(&biased.to_be_bytes());
            out.extend(self.digits.iter().map(|d| d + 1));
            out.push(0x00);
        }
        out
    }
}

impl Number {
    /// `self + other`, exactly; a result beyond 38 significant digits or DynamoDB's range is the
    /// error DynamoDB gives for storing such a number.
    pub fn add(&self, other: &Number) -> Result<Number> {
        if self.digits.is_empty() {
            return Ok(other.clone());
        }
        if other.digits.is_empty() {
            return Ok(self.clone());
        }
        // value = ±D × 10^(exp - len): align both integers D on the smaller unit.
        let unit = |n: &Number| n.exp - n.digits.len() as i32;
        let scale = unit(self).min(unit(other));
        // Little-endian digit vectors of each magnitude at that unit.
        let aligned = |n: &Number| -> Vec<u8> {
            let mut v: Vec<u8> = std::iter::repeat_n(0, (unit(n) - scale) as usize).collect();
            v.extend(n.digits.iter().rev());
            v
        };
        let (a, b) = (aligned(self), aligned(other));
        let (mag, negative) = if self.negative == other.negative {
            (add_digits(&a, &b), self.negative)
        } else {
            match cmp_digits(&a, &b) {
                Ordering::Equal => return Ok(Number::zero()),
                Ordering::Greater => (sub_digits(&a, &b), self.negative),
                Ordering::Less => (sub_digits(&b, &a), other.negative),
            }
        };
        let text: String = mag.iter().rev().map(|d| (b'0' + d) as char).collect();
        let sign = if negative { "-" } else { "" };
        Number::parse(&format!("{sign}{text}E{scale}"))
    }

    /// `self - other`, exactly (see [`Number::add`]).
    pub fn sub(&self, other: &Number) -> Result<Number> {
        self.add(&other.negated())
    }

    pub fn negated(&self) -> Number {
        if self.digits.is_empty() {
            return self.clone();
        }
        let negative = !self.negative;
        Number {
            negative,
            digits: self.digits.clone(),
            exp: self.exp,
            canonical: render(negative, &self.digits, self.exp),
        }
    }
}

/// Little-endian digit vectors: compare magnitudes.
fn cmp_digits(a: &[u8], b: &[u8]) -> Ordering {
    let trim = |v: &[u8]| v.len() - v.iter().rev().take_while(|d| **d == 0).count();
    let (la, lb) = (trim(a), trim(b));
    la.cmp(&lb)
        .then_with(|| a[..la].iter().rev().cmp(b[..lb].iter().rev()))
}

fn add_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let mut carry = 0;
    for i in 0..a.len().max(b.len()) {
        let d = a.get(i).unwrap_or(&0) + b.get(i).unwrap_or(&0) + carry;
        out.push(d % 10);
        carry = d / 10;
    }
    if carry > 0 {
        out.push(carry);
    }
    out
}

/// `a - b` for magnitudes with `a >= b`.
fn sub_digits(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let mut borrow = 0i8;
    for (i, &ai) in a.iter().enumerate() {
        let mut d = ai as i8 - *b.get(i).unwrap_or(&0) as i8 - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    out
}

fn render(negative: bool, digits: &[u8], exp: i32) -> String {
    let mut s = String::with_capacity(digits.len() + 8);
    if negative {
        s.push('-');
    }
    let ch = |d: &u8| (b'0' + d) as char;
    if exp <= 0 {
        s.push_str("0.");
        s.extend(std::iter::repeat_n('0', (-exp) as usize));
        s.extend(digits.iter().map(ch));
    } else if exp as usize >= digits.len() {
        s.extend(digits.iter().map(ch));
        s.extend(std::iter::repeat_n('0', exp as usize - digits.len()));
    } else {
        s.extend(digits[..exp as usize].iter().map(ch));
        s.push('.');
        s.extend(digits[exp as usize..].iter().map(ch));
    }
    s
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl serde::Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Number::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> String {
        Number::parse(s).unwrap().as_str().to_string()
    }

    fn add(a: &str, b: &str) -> String {
        Number::parse(a)
            .unwrap()
            .add(&Number::parse(b).unwrap())
            .map(|n| n.as_str().to_string())
            .unwrap_or_else(|e| e.message)
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(add("1", "2"), "3");
        assert_eq!(add("0.1", "0.2"), "0.3");
        assert_eq!(add("-5", "3"), "-2");
        assert_eq!(add("5", "-5"), "0");
        assert_eq!(add("999", "1"), "1000");
        assert_eq!(add("1E+100", "-1E+100"), "0");
        assert_eq!(add("-0.001", "-0.009"), "-0.01");
        assert_eq!(add("123.456", "-23.456"), "100");
        assert_eq!(add("0", "-7.5"), "-7.5");
        // 38 digits exactly, then one too many.
        let n38 = "9".repeat(38);
        assert_eq!(add(&n38, "-1"), format!("{}8", "9".repeat(37)));
        assert_eq!(
            add("1E+20", "0.000000000000000001"),
            "Attempting to store more than 38 significant digits in a Number"
        );
        assert!(add("9.9E+125", "9.9E+125").starts_with("Number overflow"));
        assert!(add("1E-130", "-1.1E-130").starts_with("Number underflow"));
        let sub = Number::parse("10")
            .unwrap()
            .sub(&Number::parse("0.5").unwrap())
            .unwrap();
        assert_eq!(sub.as_str(), "9.5");
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(c("01"), "1");
        assert_eq!(c("1.50"), "1.5");
        assert_eq!(c("-0"), "0");
        assert_eq!(c("0.000"), "0");
        assert_eq!(c("1e2"), "100");
        assert_eq!(c("1E-2"), "0.01");
        assert_eq!(c("-12.50"), "-12.5");
        assert_eq!(c("+7"), "7");
        assert_eq!(c(".5"), "0.5");
        assert_eq!(c("5."), "5");
        assert_eq!(c("123.456e1"), "1234.56");
    }

    #[test]
    fn errors() {
        for bad in ["", "abc", "1.2.3", "--1", "1e", "e5", "1e+", " ", "0x10"] {
            let e = Number::parse(bad).unwrap_err();
            assert_eq!(
                e.message, "A value provided cannot be converted into a number",
                "{bad:?}"
            );
        }
        let e = Number::parse("123456789012345678901234567890123456789").unwrap_err();
        assert!(e.message.contains("38 significant digits"));
        assert!(Number::parse("12345678901234567890123456789012345678").is_ok());
        assert!(Number::parse("1E+126")
            .unwrap_err()
            .message
            .starts_with("Number overflow"));
        assert!(Number::parse("9.9999999999999999999999999999999999999E+125").is_ok());
        assert!(Number::parse("1E-131")
            .unwrap_err()
            .message
            .starts_with("Number underflow"));
        assert!(Number::parse("1E-130").is_ok());
        assert!(
            Number::parse("100000000000000000000000000000000000000000").is_ok(),
            "trailing zeros are not significant"
        );
    }

    #[test]
    fn order_key_is_numeric_order() {
        let mut rng = 0x9E3779B97F4A7C15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut values = vec![
            "0".to_string(),
            "-0.001".into(),
            "1E+125".into(),
            "-1E+125".into(),
            "1E-130".into(),
        ];
        for _ in 0..400 {
            let mantissa = (next() % 2_000_001) as i64 - 1_000_000;
            let exp = (next() % 40) as i64 - 20;
            values.push(format!("{mantissa}e{exp}"));
        }
        let nums: Vec<(f64, Number)> = values
            .iter()
            .map(|v| (v.parse::<f64>().unwrap(), Number::parse(v).unwrap()))
            .collect();
        for (fa, a) in &nums {
            for (fb, b) in &nums {
                assert_eq!(
                    a.order_key().cmp(&b.order_key()),
                    fa.partial_cmp(fb).unwrap(),
                    "{} vs {}",
                    a.as_str(),
                    b.as_str()
                );
            }
        }
    }
}
