//! The one rendering path for text a human reads (invariant 2).
//!
//! Everything shown to a person (the terminal prompt, the approvals page,
//! MCP messages, journal views, `stop --list`, the demo) passes through
//! here. Text from a tool or an outside sender can hold control characters,
//! escape sequences, bidirectional overrides and invisible characters that
//! would redraw or hide part of what the person approves; here each of them
//! becomes a visible marker such as `⟨ESC⟩` or `⟨U+202E⟩`, never
//! interpreted. Fields are bounded with a visible `…(N more bytes)`.
//!
//! Rendering is idempotent (markers hold no hidden character), so text that
//! passes through several layers, say an error message that quotes a
//! tool's text and is later shown in a journal view, is escaped once, never
//! twice. A literal `⟨ESC⟩` in the text looks like a marker; it can add a
//! harmless-looking word, but never hide or redraw anything.

/// Whether `c` is shown as a marker: C0 and C1 controls, DEL, bidi
/// controls, zero-width and invisible characters, tag characters, line and
/// paragraph separators.
pub fn is_hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{ad}'                    // soft hyphen
        | '\u{34f}'                   // combining grapheme joiner
        | '\u{61c}'                   // Arabic letter mark
        | '\u{115f}' | '\u{1160}'     // Hangul fillers
        | '\u{17b4}' | '\u{17b5}'
        | '\u{180b}'..='\u{180f}'     // Mongolian selectors and vowel separator
        | '\u{200b}'..='\u{200f}'     // zero width space/joiners, LRM, RLM
        | '\u{2028}'..='\u{202e}'     // line/paragraph separators, bidi embeddings
        | '\u{2060}'..='\u{206f}'     // word joiner, invisible operators, isolates
        | '\u{3164}' | '\u{ffa0}'     // Hangul fillers
        | '\u{feff}'                  // zero width no-break space
        | '\u{fff9}'..='\u{fffb}'     // interlinear annotations
        | '\u{1d173}'..='\u{1d17a}'   // musical format controls
        | '\u{2800}'                  // blank Braille pattern
        | '\u{fe00}'..='\u{fe0f}'     // variation selectors (can carry hidden data)
        | '\u{fff0}'..='\u{fff8}'     // unassigned specials
        | '\u{13430}'..='\u{1343f}'   // Egyptian hieroglyph format controls
        | '\u{1bca0}'..='\u{1bca3}'   // shorthand format controls
        | '\u{e0000}'..='\u{e0fff}'   // tags, variation selectors supplement, reserved
    )
}

/// Whether `c` is a combining mark: a run of them can paint over nearby
/// lines, so only the first [`MAX_COMBINING_RUN`] of a run are kept.
fn is_combining(c: char) -> bool {
    matches!(c,
        '\u{300}'..='\u{36f}'
        | '\u{483}'..='\u{489}'
        | '\u{1ab0}'..='\u{1aff}'
        | '\u{1dc0}'..='\u{1dff}'
        | '\u{20d0}'..='\u{20ff}'
        | '\u{fe20}'..='\u{fe2f}'
    )
}

/// Combining marks kept in a row; more are shown as markers.
const MAX_COMBINING_RUN: usize = 2;

/// The visible marker for a hidden character.
fn marker(c: char) -> String {
    let name = match c {
        '\u{0}' => "NUL",
        '\u{7}' => "BEL",
        '\u{8}' => "BS",
        '\t' => "TAB",
        '\n' => "LF",
        '\u{b}' => "VT",
        '\u{c}' => "FF",
        '\r' => "CR",
        '\u{1b}' => "ESC",
        '\u{7f}' => "DEL",
        '\u{9b}' => "CSI",
        '\u{9d}' => "OSC",
        _ => return format!("⟨U+{:04X}⟩", c as u32),
    };
    format!("⟨{name}⟩")
}

/// How many characters of `text` would be shown as markers, not counting
/// ordinary line breaks and tabs.
pub fn count_hidden(text: &str) -> usize {
    hidden_chars(text).count()
}

/// The characters of `text` that hide or redraw text (what
/// [`count_hidden`] counts).
pub fn hidden_chars(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut run = 0;
    text.chars().filter(move |&c| {
        let stacked = is_combining(c) && {
            run += 1;
            run > MAX_COMBINING_RUN
        };
        if !is_combining(c) {
            run = 0;
        }
        stacked || (is_hidden(c) && !matches!(c, '\n' | '\t'))
    })
}

/// `text` on one line: every hidden character (line breaks included) as a
/// marker, cut after `max_bytes` of input with `…(N more bytes)`.
pub fn one_line(text: &str, max_bytes: usize) -> String {
    render(text, max_bytes, false)
}

/// `text` as a block: line breaks stay line breaks (a `\r\n` too), every
/// other hidden character is a marker, cut after `max_bytes` of input.
pub fn block(text: &str, max_bytes: usize) -> String {
    render(text, max_bytes, true)
}

fn render(text: &str, max_bytes: usize, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes) + 16);
    let mut chars = text.char_indices().peekable();
    let mut combining_run = 0;
    while let Some((at, c)) = chars.next() {
        if at >= max_bytes {
            out.push_str(&format!("…({} more bytes)", text.len() - at));
            break;
        }
        combining_run = if is_combining(c) {
            combining_run + 1
        } else {
            0
        };
        if combining_run > MAX_COMBINING_RUN {
            out.push_str(&marker(c));
        } else if keep_lines && c == '\n' {
            out.push('\n');
        } else if keep_lines && c == '\r' && chars.peek().is_some_and(|&(_, n)| n == '\n') {
            // A CRLF line break is a line break; a lone CR is a marker.
        } else if is_hidden(c) {
            out.push_str(&marker(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// A short account of the hidden characters of content that will be
/// published or run, for the prompt: `None` when there are none.
pub fn hidden_note(text: &str) -> Option<String> {
    match count_hidden(text) {
        0 => None,
        1 => Some("it contains 1 invisible or control character, shown as a ⟨…⟩ marker".into()),
        n => Some(format!(
            "it contains {n} invisible or control characters, shown as ⟨…⟩ markers"
        )),
    }
}

/// A time as people read it: `2026-11-29 22:14:47 UTC`.
pub fn time(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_escapes_become_markers() {
        let hostile = "ok\u{1b}[8mhidden\u{1b}[0m\r\u{1b}]0;title\u{7}x";
        let shown = one_line(hostile, 1000);
        assert!(!shown.contains('\u{1b}') && !shown.contains('\r') && !shown.contains('\u{7}'));
        assert_eq!(shown, "ok⟨ESC⟩[8mhidden⟨ESC⟩[0m⟨CR⟩⟨ESC⟩]0;title⟨BEL⟩x");
    }

    #[test]
    fn bidi_and_invisible_characters_are_marked() {
        let shown = one_line("a\u{202e}b\u{200b}c\u{e0041}\u{2066}d\u{feff}", 100);
        assert_eq!(shown, "a⟨U+202E⟩b⟨U+200B⟩c⟨U+E0041⟩⟨U+2066⟩d⟨U+FEFF⟩");
        assert_eq!(count_hidden("a\u{202e}b\u{200b}c\n"), 2);
    }

    #[test]
    fn one_line_keeps_one_line_and_block_keeps_breaks() {
        assert_eq!(one_line("a\nb\r\nc", 100), "a⟨LF⟩b⟨CR⟩⟨LF⟩c");
        assert_eq!(block("a\nb\r\nc\rd", 100), "a\nb\nc⟨CR⟩d");
        assert_eq!(one_line("\u{2028}", 10), "⟨U+2028⟩");
    }

    #[test]
    fn variation_selectors_tags_and_stacked_marks_are_marked() {
        let covert = "fine.\u{fe00}\u{fe0f}\u{e0080}\u{2800}";
        assert_eq!(
            one_line(covert, 100),
            "fine.⟨U+FE00⟩⟨U+FE0F⟩⟨U+E0080⟩⟨U+2800⟩"
        );
        assert_eq!(count_hidden(covert), 4);
        let zalgo = "a\u{301}\u{302}\u{303}\u{304}b";
        assert_eq!(one_line(zalgo, 100), "a\u{301}\u{302}⟨U+0303⟩⟨U+0304⟩b");
        assert_eq!(count_hidden(zalgo), 2);
        assert_eq!(count_hidden("café"), 0);
    }

    #[test]
    fn rendering_twice_is_rendering_once() {
        let hostile = "a\u{1b}[2Kb\r\nc\u{202e}d";
        let once = one_line(hostile, 1000);
        assert_eq!(one_line(&once, 1000), once);
        assert_eq!(block(&block(hostile, 1000), 1000), block(hostile, 1000));
    }

    #[test]
    fn long_text_is_cut_visibly() {
        let shown = one_line(&"é".repeat(100), 11);
        assert_eq!(shown, format!("{}…(188 more bytes)", "é".repeat(6)));
    }
}
