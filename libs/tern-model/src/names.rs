//! Table name rules.

use crate::error::{Result, ValidationErrors};

/// 3 to 255 characters of `[a-zA-Z0-9_.-]`, with DynamoDB's messages.
pub fn validate_table_name(name: &str, field: &str) -> Result<()> {
    let mut errors = ValidationErrors::default();
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
    {
        errors.push(
            name,
            field,
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        );
    }
    if name.len() < 3 {
        errors.push(
            name,
            field,
            "Member must have length greater than or equal to 3",
        );
    }
    if name.len() > 255 {
        errors.push(
            name,
            field,
            "Member must have length less than or equal to 255",
        );
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names() {
        assert!(validate_table_name("abc", "tableName").is_ok());
        assert!(validate_table_name("a.b-c_9", "tableName").is_ok());
        let e = validate_table_name("ab", "tableName").unwrap_err();
        assert_eq!(e.message, "1 validation error detected: Value 'ab' at 'tableName' failed to satisfy constraint: Member must have length greater than or equal to 3");
        let e = validate_table_name("a!", "tableName").unwrap_err();
        assert!(
            e.message.starts_with("2 validation errors detected: "),
            "{}",
            e.message
        );
        assert!(validate_table_name(&"a".repeat(256), "tableName").is_err());
    }
}
