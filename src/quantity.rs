//! Kubernetes quantities as exact integers: CPU in millicores, memory in bytes.
//!
//! k8s-openapi's `Quantity` is only a string. Both the profile sizing and the function build read
//! CPU and memory amounts, always rounded up, never down, so nothing is given less than it asked
//! for.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use thiserror::Error;

/// A quantity that cannot be used as a CPU or memory amount.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a Kubernetes quantity; write a number with an optional suffix, such as \
         500m, 2, 1.5, 512Mi, 1.5Gi or 1e9"
    )]
    Invalid(String),
    #[error("{0:?} is negative; CPU and memory amounts must be zero or more")]
    Negative(String),
    #[error("{0:?} is too large to be a CPU or memory amount")]
    TooLarge(String),
}

/// A CPU quantity in millicores, rounded up (`"1"` → 1000, `"0.1m"` → 1).
pub fn parse_millicpu(quantity: &Quantity) -> Result<u64, QuantityError> {
    parse_scaled(&quantity.0, 3)
}

/// A memory quantity in bytes, rounded up (`"1.5Gi"` → 1610612736, `"1500m"` → 2).
pub fn parse_bytes(quantity: &Quantity) -> Result<u64, QuantityError> {
    parse_scaled(&quantity.0, 0)
}

/// Parses a Kubernetes quantity — `[+-]digits[.digits]` then a decimal SI suffix (`n` … `E`),
/// a binary suffix (`Ki` … `Ei`) or an exponent (`e3`, `E-2`) — and returns its value times
/// `10^scale`, rounded up to a whole number. Exact: the digits are kept as an integer and the
/// powers of ten and two applied to it, with no floating point to lose a byte.
fn parse_scaled(text: &str, scale: i64) -> Result<u64, QuantityError> {
    let invalid = || QuantityError::Invalid(text.to_string());
    let too_large = || QuantityError::TooLarge(text.to_string());

    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = unsigned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(invalid());
    }

    let (exp10, exp2): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        exponent if exponent.starts_with(['e', 'E']) => {
            let digits = &exponent[1..];
            let unsigned_digits = digits.strip_prefix(['+', '-']).unwrap_or(digits);
            if unsigned_digits.is_empty() || !unsigned_digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            // An exponent beyond i64 is absurd either way: huge, or so small it rounds up to 1.
            let exponent = digits.parse::<i64>().unwrap_or(if digits.starts_with('-') {
                i64::MIN / 2
            } else {
                i64::MAX / 2
            });
            (exponent, 0)
        }
        _ => return Err(invalid()),
    };

    // The digits as one integer, with trailing zeros moved into the exponent so that long but
    // round numbers ("1000000000000000000000000000000000000000n") still fit.
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    let trimmed = significant.trim_end_matches('0');
    let trailing_zeros = (significant.len() - trimmed.len()) as i64;
    if trimmed.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative(text.to_string()));
    }
    let mut value: u128 = trimmed.parse().map_err(|_| too_large())?;
    value = value
        .checked_shl(exp2)
        .filter(|v| v >> exp2 == value)
        .ok_or_else(too_large)?;

    let power = exp10
        .saturating_add(scale)
        .saturating_add(trailing_zeros)
        .saturating_sub(fraction.len() as i64);
    if power >= 0 {
        for _ in 0..power {
            value = value.checked_mul(10).ok_or_else(too_large)?;
        }
    } else {
        // Ceiling division by 10, one digit at a time; once the value is 1 it stays 1.
        for _ in 0..power.unsigned_abs() {
            if value <= 1 {
                break;
            }
            value = value.div_ceil(10);
        }
    }
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn q(text: &str) -> Quantity {
        Quantity(text.to_string())
    }

    #[test]
    fn cpu_quantities_parse_to_millicores() {
        for (text, millicpu) in [
            ("1", 1000),
            ("250m", 250),
            ("0.5", 500),
            ("1.5", 1500),
            (".5", 500),
            ("2.", 2000),
            ("+3", 3000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("100u", 1),
            ("1000000n", 1),
            ("1500000n", 2),
            ("0.0001", 1),
            ("1k", 1_000_000),
            ("0", 0),
            ("0m", 0),
            ("-0", 0),
        ] {
            assert_eq!(parse_millicpu(&q(text)), Ok(millicpu), "{text}");
        }
    }

    #[test]
    fn memory_quantities_parse_to_bytes() {
        for (text, bytes) in [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 123 * MIB),
            ("1Ki", 1024),
            ("1.5Gi", 3 * GIB / 2),
            ("0.5Gi", 512 * MIB),
            ("1Ti", 1 << 40),
            ("1Pi", 1 << 50),
            ("1Ei", 1 << 60),
            ("1k", 1000),
            ("1G", 1_000_000_000),
            ("1T", 1_000_000_000_000),
            ("1P", 1_000_000_000_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("1500m", 2),
            ("1m", 1),
            ("0.1Ki", 103),
            ("1e+3", 1000),
            (
                "100000000000000000000000000000000000000000000000000e-40",
                10_000_000_000,
            ),
            ("0.000000000000000000000000000000000000000000001Gi", 1),
        ] {
            assert_eq!(parse_bytes(&q(text)), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn garbage_quantities_are_rejected_with_an_example_of_the_format() {
        for text in [
            "", "abc", "1Gb", "1 Gi", "Gi", ".", "1.2.3", "1e", "1e+", "1ee3", "1i", "0x10", "1KI",
            "--1", "1Mi2",
        ] {
            let err = parse_bytes(&q(text)).unwrap_err();
            assert_eq!(err, QuantityError::Invalid(text.to_string()), "{text}");
        }
        let message = QuantityError::Invalid("1Gb".into()).to_string();
        assert!(
            message.contains("\"1Gb\" is not a Kubernetes quantity"),
            "{message}"
        );
        assert!(message.contains("512Mi"), "{message}");
    }

    #[test]
    fn negative_and_huge_quantities_are_rejected() {
        assert_eq!(
            parse_millicpu(&q("-1")),
            Err(QuantityError::Negative("-1".into()))
        );
        assert_eq!(
            parse_bytes(&q("100Ei")),
            Err(QuantityError::TooLarge("100Ei".into()))
        );
        assert_eq!(
            parse_bytes(&q("1e99999999999999999999")),
            Err(QuantityError::TooLarge("1e99999999999999999999".into()))
        );
        assert_eq!(parse_bytes(&q("1e-999999")), Ok(1));
    }
}
