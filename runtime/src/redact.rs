//! Redaction: how errors and endpoints are rendered for logs, error output and NATS headers,
//! without row values or credentials. Every error the runtime prints goes through
//! [`error_chain`]; every configured URL it prints goes through [`url`] or [`url_list`].
//!
//! Contract ("never log"):
//! - Row values never leave the process. PostgreSQL errors carry them in DETAIL
//!   (`Key (email)=(...) already exists.`, `Failing row contains (...).`) and, for data
//!   exceptions (SQLSTATE class 22), in the message (`invalid input syntax for type integer:
//!   "abc"`). [`error_chain`] renders a `tokio_postgres` server error ([`DbError`]) only
//!   through [`pg_error`]: severity, SQLSTATE, the message (class 22: quoted text and everything
//!   after the first `": "` replaced; class P0, raised by user code, replaced whole), the DETAIL
//!   only in the known shapes of [`pg_detail`] with the values replaced (any other DETAIL is
//!   shown as `<redacted>`), the HINT except for classes 22, 23 and P0, and the schema, table,
//!   column, data type and constraint names. CONTEXT and internal queries are never shown.
//! - Credentials never leave the process: user info, query and fragment of every URL are
//!   replaced, in configured URLs ([`url`], [`url_list`]) and in any `scheme://` URL found in
//!   error text ([`scrub_urls`]). When a URL cannot be parsed it is replaced whole: redaction
//!   errs on the side of showing too little.
//!
//! What stays: identifiers (schema, table, column, constraint, type names), SQLSTATEs, LSNs,
//! host names and ports. They name the problem without carrying data.

use std::borrow::Cow;
use std::error::Error;

use tokio_postgres::error::DbError;

/// What replaces a removed value or secret.
pub const REDACTED: &str = "<redacted>";

/// Renders an error with its sources as `a: b: c`, for logs, error output and headers: server
/// errors of PostgreSQL through [`db_error`], everything else with [`scrub_urls`] applied.
pub fn error_chain(e: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(link) = cur {
        if !out.is_empty() {
            out.push_str(": ");
        }
        match link.downcast_ref::<DbError>() {
            Some(db) => out.push_str(&db_error(db)),
            None => out.push_str(&scrub_urls(&link.to_string())),
        }
        cur = link.source();
    }
    out
}

/// A PostgreSQL server error (an `ErrorResponse`), field by field.
#[derive(Clone, Copy, Debug, Default)]
pub struct PgError<'a> {
    pub severity: &'a str,
    /// The SQLSTATE, e.g. `23505`.
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
    pub schema: Option<&'a str>,
    pub table: Option<&'a str>,
    pub column: Option<&'a str>,
    pub datatype: Option<&'a str>,
    pub constraint: Option<&'a str>,
}

/// [`pg_error`] of a `tokio_postgres` server error.
pub fn db_error(e: &DbError) -> String {
    pg_error(&PgError {
        severity: e.severity(),
        code: e.code().code(),
        message: e.message(),
        detail: e.detail(),
        hint: e.hint(),
        schema: e.schema(),
        table: e.table(),
        column: e.column(),
        datatype: e.datatype(),
        constraint: e.constraint(),
    })
}

/// Renders a server error on one line without row values:
/// `ERROR 23505: <message>; DETAIL: <detail>; HINT: <hint> (table t, constraint c)`.
pub fn pg_error(e: &PgError<'_>) -> String {
    let mut out = format!(
        "{} {}: {}",
        e.severity,
        e.code,
        pg_message(e.code, e.message)
    );
    if let Some(detail) = e.detail {
        out.push_str("; DETAIL: ");
        out.push_str(&pg_detail(detail).unwrap_or_else(|| REDACTED.to_owned()));
    }
    if let Some(hint) = e.hint.filter(|_| !carries_values(e.code)) {
        out.push_str("; HINT: ");
        out.push_str(hint);
    }
    let names: Vec<String> = [
        ("schema", e.schema),
        ("table", e.table),
        ("column", e.column),
        ("data type", e.datatype),
        ("constraint", e.constraint),
    ]
    .into_iter()
    .filter_map(|(what, name)| name.map(|n| format!("{what} {n}")))
    .collect();
    if !names.is_empty() {
        out.push_str(" (");
        out.push_str(&names.join(", "));
        out.push(')');
    }
    out.replace(['\r', '\n'], " ")
}

/// Whether messages and hints of this SQLSTATE class may quote values: data exceptions (22),
/// integrity violations (23) and errors raised by user code (P0).
pub fn carries_values(code: &str) -> bool {
    ["22", "23", "P0"].iter().any(|c| code.starts_with(c))
}

/// The primary message of a server error, values removed: class 22 (data exception) quotes the
/// offending input, class P0 (`RAISE` in a trigger or function) may say anything.
pub fn pg_message<'a>(code: &str, message: &'a str) -> Cow<'a, str> {
    if code.starts_with("P0") {
        return Cow::Owned(format!("{REDACTED} (raised by a trigger or function)"));
    }
    if !code.starts_with("22") {
        return Cow::Borrowed(message);
    }
    let (head, tail) = match message.find(": ") {
        Some(i) => (&message[..i], true),
        None => (message, false),
    };
    let mut out = redact_quoted(head);
    if tail {
        out.push_str(": ");
        out.push_str(REDACTED);
    }
    Cow::Owned(out)
}

/// Replaces the contents of every `"..."` (an unterminated one to the end).
fn redact_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut parts = s.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    // Odd parts are inside quotes.
    for (i, part) in parts.enumerate() {
        if i % 2 == 0 {
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The DETAIL of a server error with its values replaced, for the shapes known to carry values
/// in a known place; `None` for any other DETAIL (the caller drops it).
///
/// Known shapes (PostgreSQL's `ri_ReportViolation`, `_bt_check_unique`,
/// `check_exclusion_or_unique_constraint`, `ExecConstraints`):
/// - `Key (<cols>)=(<values>) already exists.` / `is duplicated.`
/// - `Key (<cols>)=(<values>) is not present in table "<t>".` / `is still referenced from
///   table "<t>".`
/// - `Key (<cols>)=(<values>) conflicts with existing key (<cols>)=(<values>).` (and `with
///   key`)
/// - `Failing row contains (<values>).`
///
/// The values may themselves contain any of these words or parentheses: only the column list
/// before the first `)=(` and the fixed suffix at the end are kept.
pub fn pg_detail(detail: &str) -> Option<String> {
    let detail = detail.trim_end();
    if detail.starts_with("Failing row contains (") && detail.ends_with(").") {
        return Some(format!("Failing row contains ({REDACTED})."));
    }
    let rest = detail.strip_prefix("Key (")?;
    let split = rest.find(")=(")?;
    let cols = &rest[..split];
    let values_and_suffix = &rest[split + 3..];
    // Every suffix below starts with the `)` closing the values.
    let key = format!("Key ({cols})=({REDACTED}");
    for suffix in [") already exists.", ") is duplicated."] {
        if values_and_suffix.ends_with(suffix) {
            return Some(format!("{key}{suffix}"));
        }
    }
    for marker in [
        ") is not present in table \"",
        ") is still referenced from table \"",
    ] {
        if let Some(at) = values_and_suffix.rfind(marker) {
            let suffix = &values_and_suffix[at..];
            let table = &suffix[marker.len()..];
            if table.ends_with("\".") && !table[..table.len() - 2].contains('"') {
                return Some(format!("{key}{suffix}"));
            }
        }
    }
    for marker in [") conflicts with existing key (", ") conflicts with key ("] {
        let other = format!("{marker}{cols})=(");
        if values_and_suffix.contains(&other) && values_and_suffix.ends_with(").") {
            return Some(format!("{key}{other}{REDACTED})."));
        }
    }
    None
}

/// One configured URL, safe to print: user info, query and fragment replaced by
/// [`REDACTED`], scheme, host, port and path kept (the path too is replaced if it holds an `@`,
/// as a user name with a `/` would put part of it there). A URL without a scheme is read as
/// `nats://`; one that cannot be parsed is replaced whole.
pub fn url(s: &str) -> String {
    let s = s.trim();
    let with_scheme: Cow<'_, str> = if s.contains("://") {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("nats://{s}"))
    };
    let Ok(parsed) = reqwest::Url::parse(&with_scheme) else {
        return REDACTED.to_owned();
    };
    let Some(host) = parsed.host_str() else {
        return REDACTED.to_owned();
    };
    let mut out = format!("{}://", parsed.scheme());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(host);
    if let Some(port) = parsed.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    let path = parsed.path();
    if path.contains('@') {
        out.push('/');
        out.push_str(REDACTED);
    } else if path != "/" || s.ends_with('/') {
        out.push_str(path);
    }
    if parsed.query().is_some() {
        out.push('?');
        out.push_str(REDACTED);
    }
    if parsed.fragment().is_some() {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

/// A comma-separated list of URLs (`--nats-url`), each through [`url`].
pub fn url_list(s: &str) -> String {
    s.split(',')
        .filter(|u| !u.trim().is_empty())
        .map(url)
        .collect::<Vec<_>>()
        .join(",")
}

/// Replaces user info and query of every `scheme://...` URL in free text (an error message of
/// a library). A URL runs to the next whitespace or quote; everything up to its last `@` and
/// everything from its first `?` or `#` is replaced.
pub fn scrub_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(after.len());
        let (token, tail) = after.split_at(end);
        let token = match token.rfind('@') {
            Some(i) => {
                out.push_str(REDACTED);
                &token[i..]
            }
            None => token,
        };
        match token.find(['?', '#']) {
            Some(i) => {
                out.push_str(&token[..=i]);
                out.push_str(REDACTED);
            }
            None => out.push_str(token),
        }
        rest = tail;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
