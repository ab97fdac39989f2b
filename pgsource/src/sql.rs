//! Quoting for SQL text built from names (identifiers) and strings (literals).

/// Quotes an identifier (`"a""b"` for `a"b`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a string literal (`'it''s'` for `it's`; assumes `standard_conforming_strings`).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(&quote_ident("pub")), "'\"pub\"'");
    }
}
