//! A lexer for the tool's own SQL text (PostgreSQL syntax), enough to find
//! the statement's first keyword and every name written before a `(`,
//! before the server plans anything. The planner evaluates STABLE functions
//! with constant arguments while it plans (to estimate selectivity), so a
//! function like `table_to_xml('secrets', ...)` would run, and its error
//! could carry data, before the plan could be checked.
//!
//! The lexer follows PostgreSQL's rules for what hides text: `--` and
//! nested `/* */` comments, `'...'` strings (with `''`), `E'...'` strings
//! (with backslash escapes), dollar-quoted strings, and `"..."` identifiers
//! (with `""`). Anything it cannot read is refused.

use super::DataError;

/// One token of the tool's SQL.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Lexeme {
    /// An unquoted name, lowercase.
    Word(String),
    /// A `"quoted"` name, exact (`U&"..."` keeps its escapes: it names no
    /// function on the list).
    Quoted(String),
    /// A string or number: nothing to check.
    Literal,
    /// `(`.
    Open,
    /// `)`.
    Close,
    /// `.`.
    Dot,
    /// Any other punctuation or operator character.
    Symbol(char),
}

fn unreadable(what: &str) -> DataError {
    DataError::Invalid(format!("the query does not compile: {what}"))
}

/// The tokens of `sql`, without comments and white space.
pub(super) fn lex(sql: &str) -> Result<Vec<Lexeme>, DataError> {
    let chars: Vec<char> = sql.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        match c {
            // PostgreSQL's white space; anything else outside a string is
            // a token (a no-break space is part of a name, as below).
            ' ' | '\t' | '\n' | '\r' | '\x0c' => i += 1,
            '-' if at(i + 1) == Some('-') => {
                while at(i).is_some_and(|c| c != '\n' && c != '\r') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut depth = 0usize;
                loop {
                    match (at(i), at(i + 1)) {
                        (Some('/'), Some('*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some('*'), Some('/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        (Some(_), _) => i += 1,
                        (None, _) => return Err(unreadable("an unterminated comment")),
                    }
                }
            }
            '\'' => {
                i = skip_string(&chars, i + 1, false)?;
                out.push(Lexeme::Literal);
            }
            'e' | 'E' if at(i + 1) == Some('\'') => {
                i = skip_string(&chars, i + 2, true)?;
                out.push(Lexeme::Literal);
            }
            '"' => {
                let (name, next) = quoted_name(&chars, i + 1)?;
                out.push(Lexeme::Quoted(name));
                i = next;
            }
            'u' | 'U' if at(i + 1) == Some('&') && matches!(at(i + 2), Some('"' | '\'')) => {
                if at(i + 2) == Some('"') {
                    let (name, next) = quoted_name(&chars, i + 3)?;
                    out.push(Lexeme::Quoted(format!("U&{name}")));
                    i = next;
                } else {
                    i = skip_string(&chars, i + 3, false)?;
                    out.push(Lexeme::Literal);
                }
            }
            '$' if dollar_tag(&chars, i).is_some() => {
                let tag = dollar_tag(&chars, i).expect("checked");
                let body = i + tag.len();
                let close: Vec<char> = tag.clone();
                let mut j = body;
                loop {
                    if j + close.len() > chars.len() {
                        return Err(unreadable("an unterminated dollar-quoted string"));
                    }
                    if chars[j..j + close.len()] == close[..] {
                        break;
                    }
                    j += 1;
                }
                i = j + close.len();
                out.push(Lexeme::Literal);
            }
            // Names start with a letter, `_` or any non-ASCII character,
            // and go on with those, digits and `$` (PostgreSQL's rule).
            c if c.is_ascii_alphabetic() || c == '_' || !c.is_ascii() => {
                let start = i;
                while at(i).is_some_and(|c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
                }) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                out.push(Lexeme::Word(word.to_lowercase()));
            }
            // Numbers: digits and points; a letter after them starts a
            // name (so no name hides in a number).
            c if c.is_ascii_digit() => {
                while at(i).is_some_and(|c| c.is_ascii_digit() || c == '.') {
                    i += 1;
                }
                out.push(Lexeme::Literal);
            }
            '(' => {
                out.push(Lexeme::Open);
                i += 1;
            }
            ')' => {
                out.push(Lexeme::Close);
                i += 1;
            }
            '.' => {
                out.push(Lexeme::Dot);
                i += 1;
            }
            c => {
                out.push(Lexeme::Symbol(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The index after a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize, backslashes: bool) -> Result<usize, DataError> {
    loop {
        match chars.get(i) {
            None => return Err(unreadable("an unterminated string")),
            Some('\\') if backslashes => i += 2,
            Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
            Some('\'') => return Ok(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// A quoted name whose body starts at `i`, and the index after it.
fn quoted_name(chars: &[char], mut i: usize) -> Result<(String, usize), DataError> {
    let mut name = String::new();
    loop {
        match chars.get(i) {
            None => return Err(unreadable("an unterminated quoted name")),
            Some('"') if chars.get(i + 1) == Some(&'"') => {
                name.push('"');
                i += 2;
            }
            Some('"') => return Ok((name, i + 1)),
            Some(c) => {
                name.push(*c);
                i += 1;
            }
        }
    }
}

/// `$tag$` (or `$$`) starting at `i`, when it is one.
fn dollar_tag(chars: &[char], i: usize) -> Option<Vec<char>> {
    if chars.get(i) != Some(&'$') {
        return None;
    }
    // A `$` right after a name character is part of the name (or `$1`).
    let mut j = i + 1;
    while let Some(c) = chars.get(j) {
        if *c == '$' {
            return Some(chars[i..=j].to_vec());
        }
        let tag_char = c.is_ascii_alphanumeric() || *c == '_' || !c.is_ascii();
        if !tag_char || (j == i + 1 && c.is_ascii_digit()) {
            return None;
        }
        j += 1;
    }
    None
}

/// The statement's first keyword, lowercase; `(` for a parenthesised
/// query, `` for none.
pub(super) fn first_keyword(tokens: &[Lexeme]) -> String {
    match tokens.first() {
        Some(Lexeme::Word(w)) => w.clone(),
        Some(Lexeme::Open) => "(".into(),
        _ => String::new(),
    }
}

/// SQL words that may stand before `(` without calling a function.
const WORDS_BEFORE_PARENS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "bernoulli",
    "between",
    "by",
    "case",
    "cast",
    "cube",
    "distinct",
    "else",
    "escape",
    "except",
    "exists",
    "fetch",
    "filter",
    "first",
    "for",
    "from",
    "group",
    "groups",
    "grouping",
    "having",
    "ilike",
    "in",
    "intersect",
    "is",
    "join",
    "lateral",
    "like",
    "limit",
    "next",
    "system",
    "materialized",
    "not",
    "offset",
    "on",
    "only",
    "or",
    "over",
    "partition",
    "range",
    "recursive",
    "repeatable",
    "rollup",
    "rows",
    "select",
    "sets",
    "similar",
    "some",
    "tablesample",
    "then",
    "union",
    "using",
    "values",
    "when",
    "where",
    "with",
    "within",
    // types with a modifier: `numeric(10,2)`, `varchar(20)`, `timestamp(3)`
    "bit",
    "char",
    "character",
    "dec",
    "decimal",
    "float",
    "interval",
    "numeric",
    "time",
    "timestamp",
    "varchar",
    "varying",
];

/// Words that call a function without parentheses and tell the server's
/// state (`CURRENT_USER`), or cast text to a catalog lookup (`'t'::regclass`
/// tells whether a table exists): refused wherever they stand.
pub(super) const REFUSED_WORDS: &[&str] = &[
    "current_user",
    "session_user",
    "current_role",
    "current_catalog",
    "current_schema",
    "user",
    "system_user",
    "regclass",
    "regproc",
    "regprocedure",
    "regoper",
    "regoperator",
    "regtype",
    "regrole",
    "regnamespace",
    "regconfig",
    "regdictionary",
    "regcollation",
];

/// The first word of [`REFUSED_WORDS`] in `tokens`.
pub(super) fn refused_word(tokens: &[Lexeme]) -> Option<&str> {
    tokens.iter().find_map(|t| match t {
        Lexeme::Word(w) => REFUSED_WORDS.iter().find(|r| **r == w).copied(),
        _ => None,
    })
}

/// Every name written before a `(` that calls something, with the schema
/// when qualified (`pg_catalog.lower(`). Column lists after a name (`WITH
/// t(a, b) AS`, `AS t(a, b)`) are not calls.
pub(super) fn calls(tokens: &[Lexeme]) -> Vec<(Option<String>, String)> {
    let name = |t: &Lexeme| match t {
        Lexeme::Word(w) | Lexeme::Quoted(w) => Some(w.clone()),
        _ => None,
    };
    let mut found = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if *token != Lexeme::Open || i == 0 {
            continue;
        }
        let Some(called) = name(&tokens[i - 1]) else {
            continue;
        };
        if matches!(&tokens[i - 1], Lexeme::Word(w) if WORDS_BEFORE_PARENS.contains(&w.as_str())) {
            continue;
        }
        let qualified = i >= 3 && tokens[i - 2] == Lexeme::Dot;
        let before = if qualified {
            i.checked_sub(4)
        } else {
            i.checked_sub(2)
        };
        // `AS t(a, b)`: an alias with column names.
        if before.is_some_and(|b| tokens[b] == Lexeme::Word("as".into())) {
            continue;
        }
        // `WITH t(a, b) AS (...)`: the first WITH query's column names
        // (later ones, after a comma, cannot be told from a call: refused).
        let opens_with = !qualified
            && i >= 2
            && matches!(&tokens[i - 2], Lexeme::Word(w) if w == "with" || w == "recursive");
        if opens_with
            && let Some(close) = matching_close(tokens, i)
            && tokens.get(close + 1) == Some(&Lexeme::Word("as".into()))
        {
            continue;
        }
        let schema = qualified.then(|| name(&tokens[i - 3])).flatten();
        found.push((schema, called));
    }
    found
}

/// The index of the `)` matching the `(` at `open`.
fn matching_close(tokens: &[Lexeme], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Lexeme::Open => depth += 1,
            Lexeme::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn called(sql: &str) -> Vec<String> {
        calls(&lex(sql).unwrap())
            .into_iter()
            .map(|(s, n)| s.map_or(n.clone(), |s| format!("{s}.{n}")))
            .collect()
    }

    #[test]
    fn calls_are_found_however_written() {
        assert_eq!(
            called(
                "SELECT lower(name), TABLE_TO_XML /* x */ ('s', true, false, ''), \
                 pg_catalog.current_setting ('x'), \"pg_read_file\"('/etc/passwd') \
                 FROM customers WHERE id IN (1) AND x::numeric(10,2) > 0"
            ),
            [
                "lower",
                "table_to_xml",
                "pg_catalog.current_setting",
                "pg_read_file"
            ]
        );
    }

    #[test]
    fn strings_comments_and_column_lists_hide_nothing_they_should_not() {
        assert_eq!(
            called(
                "WITH t(a, b) AS (SELECT 1, 2) SELECT 'f(x)', E'it\\'s g(y)', $q$ h(z) $q$, \
                 -- k(1)\n /* /* m(2) */ n(3) */ a FROM t AS u(c, d)"
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn nothing_hides_where_postgresql_sees_code() {
        // A `CAST(f(x) AS t)` is not a WITH query's column list.
        assert_eq!(
            called("SELECT CAST('x' || CAST(table_to_xml('s', true, false, '') AS text) AS int)"),
            ["table_to_xml"]
        );
        // Non-ASCII characters are name characters: `€$a$` is a name, not
        // the start of a dollar-quoted string.
        for space in ["€", "\u{a0}", "\u{85}"] {
            let sql = format!("SELECT id FROM c x{space}$a$ WHERE f(1) = 0 OR x{space}$a$.id = 0");
            assert_eq!(called(&sql), ["f"], "{sql:?}");
        }
        // A `--` comment ends at a carriage return too.
        assert_eq!(called("SELECT 1 -- x\r + f(1)"), ["f"]);
        // No name hides in a number.
        assert_eq!(called("SELECT 1f(2)"), ["f"]);
        // Later WITH queries' column lists are not told from calls.
        assert_eq!(
            called("WITH a(x) AS (SELECT 1), b(y) AS (SELECT 2) SELECT 1"),
            ["b"]
        );
        let tokens = lex("SELECT current_user, 't'::regclass").unwrap();
        assert_eq!(refused_word(&tokens), Some("current_user"));
    }

    #[test]
    fn nested_comments_do_not_hide_the_first_keyword() {
        let tokens = lex("/* /* */ SELECT */ DELETE FROM orders").unwrap();
        assert_eq!(first_keyword(&tokens), "delete");
        assert!(lex("SELECT /* unterminated").is_err());
        assert!(lex("SELECT 'unterminated").is_err());
    }
}
