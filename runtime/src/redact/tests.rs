use super::*;

#[test]
fn details_keep_their_shape_without_values() {
    let r = REDACTED;
    let cases: &[(&str, Option<String>)] = &[
        (
            "Key (email)=(ann@example.com) already exists.",
            Some(format!("Key (email)=({r}) already exists.")),
        ),
        (
            "Key (a, b)=(1, x) already exists.",
            Some(format!("Key (a, b)=({r}) already exists.")),
        ),
        // Values holding the words and parentheses of the shape itself.
        (
            "Key (v)=(x) already exists. Key (v)=(y) already exists.",
            Some(format!("Key (v)=({r}) already exists.")),
        ),
        (
            "Key (lower(email::text))=(ann@example.com) already exists.",
            Some(format!("Key (lower(email::text))=({r}) already exists.")),
        ),
        (
            "Key (email)=(ann@example.com) is duplicated.",
            Some(format!("Key (email)=({r}) is duplicated.")),
        ),
        (
            "Key (parent_id)=(42) is not present in table \"parent\".",
            Some(format!(
                "Key (parent_id)=({r}) is not present in table \"parent\"."
            )),
        ),
        (
            "Key (id)=(7) is not present in table \"x\") is not present in table \"p\".",
            Some(format!("Key (id)=({r}) is not present in table \"p\".")),
        ),
        (
            "Key (id)=(42) is still referenced from table \"child\".",
            Some(format!(
                "Key (id)=({r}) is still referenced from table \"child\"."
            )),
        ),
        (
            "Key (during)=([1,5)) conflicts with existing key (during)=([2,3)).",
            Some(format!(
                "Key (during)=({r}) conflicts with existing key (during)=({r})."
            )),
        ),
        (
            "Key (c)=(<(0,0),1>) conflicts with key (c)=(<(0,0),2>).",
            Some(format!("Key (c)=({r}) conflicts with key (c)=({r}).")),
        ),
        (
            "Failing row contains (2, -1, secret).",
            Some(format!("Failing row contains ({r}).")),
        ),
        (
            "Failing row contains (2, null).\n",
            Some(format!("Failing row contains ({r}).")),
        ),
        // Unknown shapes are dropped by the caller.
        ("Token \"abc\" is invalid.", None),
        ("Key (email)=(ann@example.com) is unusual.", None),
        ("Key (email)=(ann@example.com", None),
        ("Failing row contains (2, -1", None),
        (
            "Process 1 waits for ShareLock on transaction 2; blocked by process 3.\nProcess 3: UPDATE t SET v = 'secret'",
            None,
        ),
        ("A field with precision 5, scale 2 must round to an absolute value less than 10^3.", None),
        ("", None),
    ];
    for (detail, want) in cases {
        assert_eq!(pg_detail(detail), *want, "{detail:?}");
    }
}

#[test]
fn data_exception_messages_lose_their_quoted_input() {
    let r = REDACTED;
    let cases: &[(&str, &str, String)] = &[
        (
            "22P02",
            "invalid input syntax for type integer: \"abc\"",
            format!("invalid input syntax for type integer: {r}"),
        ),
        (
            "22P02",
            "invalid input value for enum mood: \"sad: very\"",
            format!("invalid input value for enum mood: {r}"),
        ),
        (
            "22003",
            "value \"99999999999\" is out of range for type integer",
            format!("value \"{r}\" is out of range for type integer"),
        ),
        (
            "22021",
            "invalid byte sequence for encoding \"UTF8\": 0xff",
            format!("invalid byte sequence for encoding \"{r}\": {r}"),
        ),
        (
            "22008",
            "date/time field value out of range: \"2024-13-01\"",
            format!("date/time field value out of range: {r}"),
        ),
        (
            "22001",
            "value too long for type character varying(3)",
            "value too long for type character varying(3)".to_owned(),
        ),
        ("22012", "division by zero", "division by zero".to_owned()),
        (
            "22P02",
            "unterminated \"quote",
            format!("unterminated \"{r}\""),
        ),
        (
            "P0001",
            "email ann@example.com is not allowed",
            format!("{r} (raised by a trigger or function)"),
        ),
        // Other classes quote identifiers, not values.
        (
            "23505",
            "duplicate key value violates unique constraint \"users_email_key\"",
            "duplicate key value violates unique constraint \"users_email_key\"".to_owned(),
        ),
        (
            "42P01",
            "relation \"public.nope\" does not exist",
            "relation \"public.nope\" does not exist".to_owned(),
        ),
    ];
    for (code, message, want) in cases {
        assert_eq!(pg_message(code, message), *want, "{code} {message:?}");
    }
}

#[test]
fn server_errors_render_on_one_line_with_names() {
    let base = PgError {
        severity: "ERROR",
        code: "23505",
        message: "duplicate key value violates unique constraint \"users_email_key\"",
        detail: Some("Key (email)=(ann@example.com) already exists."),
        hint: None,
        schema: Some("public"),
        table: Some("users"),
        column: None,
        datatype: None,
        constraint: Some("users_email_key"),
    };
    let cases: Vec<(PgError<'_>, &str)> = vec![
        (
            base,
            "ERROR 23505: duplicate key value violates unique constraint \"users_email_key\"; \
             DETAIL: Key (email)=(<redacted>) already exists. (schema public, table users, \
             constraint users_email_key)",
        ),
        (
            PgError {
                detail: Some("Something new: ann@example.com"),
                hint: Some("Use ann@example.com instead"),
                ..base
            },
            "ERROR 23505: duplicate key value violates unique constraint \"users_email_key\"; \
             DETAIL: <redacted> (schema public, table users, constraint users_email_key)",
        ),
        (
            PgError {
                severity: "FATAL",
                code: "42P01",
                message: "relation \"x\" does not exist",
                detail: None,
                hint: Some("Create it\nfirst."),
                schema: None,
                table: None,
                column: None,
                datatype: None,
                constraint: None,
            },
            "FATAL 42P01: relation \"x\" does not exist; HINT: Create it first.",
        ),
        (
            PgError {
                code: "22P02",
                message: "invalid input syntax for type integer: \"abc\"",
                detail: None,
                hint: Some("abc"),
                schema: None,
                table: None,
                column: Some("v"),
                datatype: Some("int4"),
                constraint: None,
                ..base
            },
            "ERROR 22P02: invalid input syntax for type integer: <redacted> (column v, data type \
             int4)",
        ),
    ];
    for (e, want) in cases {
        assert_eq!(pg_error(&e), want);
    }
}

#[test]
fn urls_lose_credentials() {
    let r = REDACTED;
    let cases: &[(&str, String)] = &[
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222".to_owned()),
        (
            "nats://user:secretpw@127.0.0.1:4222",
            format!("nats://{r}@127.0.0.1:4222"),
        ),
        ("nats://t0ken@nats:4222", format!("nats://{r}@nats:4222")),
        ("tls://u:p@ss@nats:4222", format!("tls://{r}@nats:4222")),
        ("user:secretpw@nats:4222", format!("nats://{r}@nats:4222")),
        ("nats:4222", "nats://nats:4222".to_owned()),
        // A password with an unescaped `/`, `?` or `#` does not parse: all of it goes.
        ("nats://user:sec/ret@nats:4222", r.to_owned()),
        ("nats://user:sec?ret@nats:4222", r.to_owned()),
        ("nats://user:sec#ret@nats:4222", r.to_owned()),
        // A user name with a `/` puts the rest into the path.
        ("nats://to/ken@nats", format!("nats://to/{r}")),
        (
            "https://hooks.example:8443/in?token=abc#frag",
            format!("https://hooks.example:8443/in?{r}#{r}"),
        ),
        (
            "https://u:p@hooks.example/in",
            format!("https://{r}@hooks.example/in"),
        ),
        (
            "https://hooks.example/",
            "https://hooks.example/".to_owned(),
        ),
        ("not a url at all: secret", r.to_owned()),
        ("", r.to_owned()),
    ];
    for (input, want) in cases {
        assert_eq!(url(input), *want, "{input:?}");
    }
    assert_eq!(
        url_list("nats://a:secretpw@h1:4222, nats://h2:4222,tls://tok@h3"),
        format!("nats://{r}@h1:4222,nats://h2:4222,tls://{r}@h3")
    );
    // A password with a comma splits into pieces that do not parse.
    assert_eq!(
        url_list("nats://a:se,cret@h1:4222"),
        format!("{r},nats://{r}@h1:4222")
    );
}

#[test]
fn urls_in_free_text_lose_credentials() {
    let r = REDACTED;
    let cases: &[(&str, String)] = &[
        ("no url here", "no url here".to_owned()),
        (
            "could not connect to nats://user:secretpw@127.0.0.1:1 within 2s",
            format!("could not connect to nats://{r}@127.0.0.1:1 within 2s"),
        ),
        (
            "a: \"https://hooks.example/in?token=abc\", b: nats://x@y@h",
            format!("a: \"https://hooks.example/in?{r}\", b: nats://{r}@h"),
        ),
        (
            "nats://h1:4222,nats://u:p@h2:4222",
            format!("nats://{r}@h2:4222"),
        ),
        ("end://", "end://".to_owned()),
    ];
    for (input, want) in cases {
        assert_eq!(scrub_urls(input), *want, "{input:?}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not reach nats://user:secretpw@h:4222 (see {0})")]
struct UrlError(&'static str);

#[test]
fn chains_of_other_errors_are_scrubbed() {
    assert_eq!(
        error_chain(&UrlError("https://x/?t=1")),
        // The query runs to the next space: the `)` goes with it.
        format!("could not reach nats://{REDACTED}@h:4222 (see https://x/?{REDACTED}")
    );
}
