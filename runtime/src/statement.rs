//! The statements of a SQL query string, as far as DDL tracking needs them: split on `;`
//! outside quotes, dollar quotes, comments and parentheses, cut into tokens (words, quoted
//! identifiers, symbols, literals), with the command tag PostgreSQL gives a statement. Not a
//! parser: enough to single out one statement of a query and to tell what kind it is.
//!
//! Shared by both sides: DDL capture (`source::ddl`) isolates the statement to replay, DDL
//! replay (`sink::postgres::ddl`) classifies it (`CONCURRENTLY`, a `DROP`).

/// The token of a statement that matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// An unquoted word (keyword or identifier), lowercased.
    Word(String),
    /// A quoted identifier, as written.
    Quoted(String),
    /// Any other symbol; parentheses and commas are told apart.
    Symbol(char),
    /// A literal (string, number, dollar-quoted).
    Literal,
}

impl Token {
    /// The word or quoted identifier, if the token is one.
    pub(crate) fn name(&self) -> Option<String> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w.clone()),
            _ => None,
        }
    }
}

/// One statement of a query string.
#[derive(Debug)]
pub(crate) struct Statement {
    /// Its text, trimmed, without the `;`.
    pub(crate) text: String,
    pub(crate) tokens: Vec<Token>,
}

impl Statement {
    pub(crate) fn parse(text: &str) -> Statement {
        Statement {
            text: text.trim().to_owned(),
            tokens: tokenize(text),
        }
    }

    pub(crate) fn words(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map_while(|t| match t {
            Token::Word(w) => Some(w.as_str()),
            _ => None,
        })
    }

    pub(crate) fn has_word(&self, word: &str) -> bool {
        self.tokens
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w == word))
    }

    /// The command tag PostgreSQL gives the statement, for the kinds that can be captured
    /// (else a tag no capture has).
    pub(crate) fn tag(&self) -> String {
        let words: Vec<&str> = self.words().collect();
        let upper = |w: &str| w.to_uppercase();
        match words.as_slice() {
            ["alter", kind, ..] | ["drop", kind, ..] => {
                format!("{} {}", upper(words[0]), upper(kind))
            }
            ["security", "label", ..] => "SECURITY LABEL".to_owned(),
            ["create", rest @ ..] => {
                let kind = rest.iter().find(|w| {
                    !matches!(
                        **w,
                        "or" | "replace"
                            | "unique"
                            | "global"
                            | "local"
                            | "temp"
                            | "temporary"
                            | "unlogged"
                    )
                });
                match kind {
                    Some(&"table") if self.has_top_level_word("as") => "CREATE TABLE AS".to_owned(),
                    Some(kind) => format!("CREATE {}", upper(kind)),
                    None => "CREATE".to_owned(),
                }
            }
            [first, ..] => upper(first),
            [] => String::new(),
        }
    }

    fn has_top_level_word(&self, word: &str) -> bool {
        let mut depth = 0i32;
        self.tokens.iter().any(|t| match t {
            Token::Symbol('(') => {
                depth += 1;
                false
            }
            Token::Symbol(')') => {
                depth -= 1;
                false
            }
            Token::Word(w) => depth == 0 && w == word,
            _ => false,
        })
    }

    /// Whether an identifier of the statement is `name` (unquoted words fold to lower case).
    pub(crate) fn names(&self, name: &str) -> bool {
        !name.is_empty()
            && self.tokens.iter().any(|t| match t {
                Token::Word(w) => {
                    *w == name.to_ascii_lowercase() && name == name.to_ascii_lowercase()
                }
                Token::Quoted(q) => q == name,
                _ => false,
            })
    }

    /// `ROLLBACK [TO SAVEPOINT]` or `ABORT`.
    pub(crate) fn rolls_back(&self) -> bool {
        matches!(self.words().next(), Some("rollback" | "abort"))
    }

    /// A `DROP ...`, or an `ALTER TABLE` / `ALTER INDEX` whose every action is a `DROP`
    /// (`DROP COLUMN`, `DROP CONSTRAINT`; not `ALTER COLUMN ... DROP DEFAULT`).
    pub(crate) fn is_drop(&self) -> bool {
        let t = &self.tokens;
        let word = |i: usize, w: &str| matches!(t.get(i), Some(Token::Word(x)) if x == w);
        if word(0, "drop") {
            return true;
        }
        if !(word(0, "alter") && (word(1, "table") || word(1, "index"))) {
            return false;
        }
        let mut i = 2;
        if word(i, "if") && word(i + 1, "exists") {
            i += 2;
        }
        if word(i, "only") {
            i += 1;
        }
        // The name, maybe qualified, maybe followed by `*`.
        if !matches!(t.get(i), Some(Token::Word(_) | Token::Quoted(_))) {
            return false;
        }
        i += 1;
        while matches!(t.get(i), Some(Token::Symbol('.')))
            && matches!(t.get(i + 1), Some(Token::Word(_) | Token::Quoted(_)))
        {
            i += 2;
        }
        if matches!(t.get(i), Some(Token::Symbol('*'))) {
            i += 1;
        }
        // Actions are separated by top-level commas; each must start with DROP.
        let mut depth = 0i32;
        let mut action_start = true;
        let mut any = false;
        for tok in &t[i..] {
            if action_start {
                if !matches!(tok, Token::Word(w) if w == "drop") {
                    return false;
                }
                action_start = false;
                any = true;
            }
            match tok {
                Token::Symbol('(') => depth += 1,
                Token::Symbol(')') => depth -= 1,
                Token::Symbol(',') if depth == 0 => action_start = true,
                _ => {}
            }
        }
        any && !action_start
    }
}

/// Tokens of one SQL statement: words, quoted identifiers, symbols; comments skipped,
/// literals (strings, numbers, dollar quotes) kept as [`Token::Literal`].
fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            _ if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'\'' => {
                i = skip_quoted(b, i, b'\'', false);
                out.push(Token::Literal);
            }
            b'"' => {
                let end = skip_quoted(b, i, b'"', false);
                // Without its closing quote (left open at the end), the name runs to the end.
                let closed = end > i + 1 && b[end - 1] == b'"';
                let inner = sql
                    .get(i + 1..if closed { end - 1 } else { end })
                    .unwrap_or_default();
                out.push(Token::Quoted(inner.replace("\"\"", "\"")));
                i = end;
            }
            b'$' => match dollar_tag_end(sql, i) {
                Some(e) => {
                    i = e;
                    out.push(Token::Literal);
                }
                None => {
                    i += 1;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    out.push(Token::Literal);
                }
            },
            _ if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Literal);
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric()
                        || b[i] == b'_'
                        || b[i] == b'$'
                        || b[i] >= 0x80)
                {
                    i += 1;
                }
                // E'...', B'...', X'...', U&'...' string prefixes.
                if b.get(i) == Some(&b'\'') && i - start == 1 {
                    i = skip_quoted(b, i, b'\'', escape_string(b, i));
                    out.push(Token::Literal);
                } else {
                    out.push(Token::Word(sql[start..i].to_ascii_lowercase()));
                }
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(Token::Symbol(ch));
                i += ch.len_utf8();
            }
        }
    }
    out
}

/// Index just past the quoted text starting at `i` (doubled quotes stay inside; with
/// `backslash`, as in `E'...'`, a backslash escapes the next byte).
fn skip_quoted(b: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    i += 1;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Whether the `'` at `i` opens an `E'...'` string.
fn escape_string(b: &[u8], i: usize) -> bool {
    i >= 1
        && matches!(b[i - 1], b'e' | b'E')
        && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_' || b[i - 2] >= 0x80))
}

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    // Block comments nest in PostgreSQL.
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Index just past a `$tag$ ... $tag$` string starting at `i`, if one starts there.
fn dollar_tag_end(sql: &str, i: usize) -> Option<usize> {
    let b = sql.as_bytes();
    let e = b[i + 1..]
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_'))
        .map(|p| i + 1 + p)?;
    if b[e] != b'$' || b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let tag = &sql[i..=e];
    Some(match sql[e + 1..].find(tag) {
        Some(p) => e + 1 + p + tag.len(),
        None => b.len(),
    })
}

/// Splits SQL on `;` outside quotes, dollar quotes and comments.
pub(crate) fn split_statements(sql: &str) -> Vec<String> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'\'' => i = skip_quoted(b, i, b'\'', escape_string(b, i)),
            b'"' => i = skip_quoted(b, i, b'"', false),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_block_comment(b, i),
            b'$' => match dollar_tag_end(sql, i) {
                Some(e) => i = e,
                None => i += 1,
            },
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth -= 1;
                i += 1;
            }
            // `CREATE RULE ... DO (a; b)` keeps its `;` inside parentheses.
            b';' if depth <= 0 => {
                let stmt = sql[start..i].trim();
                if !stmt.is_empty() {
                    out.push(stmt.to_owned());
                }
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    let stmt = sql[start.min(sql.len())..].trim();
    if !stmt.is_empty() {
        out.push(stmt.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_outside_quotes_and_comments() {
        let sql = "ALTER TABLE t ADD c text DEFAULT 'a;b'; -- x;y\nINSERT INTO t VALUES ($$;$$); /* ; /* ; */ ; */ CREATE INDEX i ON t (c)";
        assert_eq!(
            split_statements(sql),
            vec![
                "ALTER TABLE t ADD c text DEFAULT 'a;b'".to_owned(),
                "-- x;y\nINSERT INTO t VALUES ($$;$$)".to_owned(),
                "/* ; /* ; */ ; */ CREATE INDEX i ON t (c)".to_owned(),
            ]
        );
        assert_eq!(split_statements("SELECT 1"), vec!["SELECT 1".to_owned()]);
        assert_eq!(
            split_statements("SELECT $a$x;y$a$;"),
            vec!["SELECT $a$x;y$a$".to_owned()]
        );
        assert_eq!(
            split_statements(r"SELECT E'it\'s;'; SELECT 'a\'; SELECT 2"),
            vec![
                r"SELECT E'it\'s;'".to_owned(),
                r"SELECT 'a\'".to_owned(),
                "SELECT 2".to_owned()
            ]
        );
        assert_eq!(
            split_statements(
                "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2); SELECT 3"
            ),
            vec![
                "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2)".to_owned(),
                "SELECT 3".to_owned()
            ]
        );
    }

    #[test]
    fn statement_tags() {
        for (sql, tag) in [
            ("ALTER TABLE t ADD c int", "ALTER TABLE"),
            ("alter table if exists t add c int", "ALTER TABLE"),
            ("-- note\nALTER INDEX i RENAME TO j", "ALTER INDEX"),
            (
                "CREATE UNIQUE INDEX CONCURRENTLY i ON t (c)",
                "CREATE INDEX",
            ),
            ("create index on t (c)", "CREATE INDEX"),
            ("DROP INDEX i", "DROP INDEX"),
            ("COMMENT ON TABLE t IS 'x'", "COMMENT"),
            ("CREATE TEMP TABLE x (a int)", "CREATE TABLE"),
            ("CREATE TABLE x AS SELECT 1", "CREATE TABLE AS"),
            ("CREATE TABLE x (a int DEFAULT 1)", "CREATE TABLE"),
            ("SECURITY LABEL ON TABLE t IS 'x'", "SECURITY LABEL"),
            ("DO $$ BEGIN ALTER TABLE t ADD c int; END $$", "DO"),
            ("CALL migrate()", "CALL"),
            ("insert into t values (1)", "INSERT"),
        ] {
            assert_eq!(Statement::parse(sql).tag(), tag, "{sql}");
        }
    }

    /// Found by the property below: a quoted name left open before a multi-byte character
    /// cut the query inside that character (a panic in the worker and the replicator).
    #[test]
    fn a_quoted_name_left_open_runs_to_the_end() {
        for (sql, name) in [
            ("\"é", "é"),
            ("x \"ab\"\"", "ab\""),
            ("\"", ""),
            ("\"ü\"", "ü"),
        ] {
            let names: Vec<String> = Statement::parse(sql)
                .tokens
                .iter()
                .filter_map(|t| match t {
                    Token::Quoted(q) => Some(q.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(names, [name], "{sql}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// No query text makes the splitter or the tokenizer panic (quotes, dollar quotes and
        /// comments left open included), and the statements are pieces of the query.
        #[test]
        fn no_query_makes_the_splitter_panic(sql in r#"([ -~\n]|\$\$|/\*|\*/|--|'|"|;|é){0,80}"#) {
            for statement in split_statements(&sql) {
                proptest::prop_assert!(sql.contains(statement.trim()));
                let parsed = Statement::parse(&statement);
                let _ = (parsed.tag(), parsed.is_drop(), parsed.rolls_back());
            }
        }
    }
}
