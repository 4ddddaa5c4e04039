//! What "printable" means for the ids and patterns bots send (SPEC §2.1),
//! and how much of an offending value an error message may show.

/// Characters of an offending value an error message shows at most.
pub const ECHO_CHARS: usize = 64;

/// Whether `c` may appear in a contact id, handoff id or pattern: anything
/// but a control, format (zero-width, bidi override, BOM, …), line or
/// paragraph separator, private-use or non-character code point. Such
/// characters are invisible or reorder text, so two ids that look the same
/// in a log or a console would differ. An ordinary space is fine.
pub fn printable(c: char) -> bool {
    if c.is_ascii() {
        // No ASCII code point is format, private-use or a non-character.
        return !c.is_ascii_control();
    }
    !(c.is_control()
        || is_format(c)
        || matches!(c, '\u{2028}' | '\u{2029}')
        || is_private_use(c)
        || is_noncharacter(c))
}

/// General category Cf (format), Unicode 16.0. Rust's standard library has
/// no category table and this one is short and stable.
const FORMAT: [(char, char); 21] = [
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{202A}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

fn is_format(c: char) -> bool {
    FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Category Co: the BMP's private-use area and planes 15 and 16.
fn is_private_use(c: char) -> bool {
    ('\u{E000}'..='\u{F8FF}').contains(&c) || c >= '\u{F0000}'
}

/// U+FDD0..U+FDEF and the last two code points of every plane.
fn is_noncharacter(c: char) -> bool {
    ('\u{FDD0}'..='\u{FDEF}').contains(&c) || (c as u32 & 0xFFFE) == 0xFFFE
}

/// An offending value as an error message may show it: at most
/// [`ECHO_CHARS`] characters, then "…"; characters that are not printable
/// are escaped, so the message cannot reorder or hide text around it.
pub fn echo(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(4 * ECHO_CHARS));
    for (i, c) in value.chars().enumerate() {
        if i == ECHO_CHARS {
            out.push('…');
            break;
        }
        if printable(c) {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_excludes_invisible_and_reordering_code_points() {
        let refused = [
            '\n',
            '\t',
            '\u{0}',
            '\u{7F}',
            '\u{85}', // control
            '\u{200B}',
            '\u{200D}',
            '\u{202E}',
            '\u{2066}',
            '\u{FEFF}',
            '\u{AD}',    // format
            '\u{E0041}', // tag
            '\u{2028}',
            '\u{2029}', // line and paragraph separators
            '\u{E000}',
            '\u{F8FF}',
            '\u{F0000}',
            '\u{10FFFD}', // private use
            '\u{FDD0}',
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{1FFFF}',
            '\u{10FFFF}', // non-characters
        ];
        for c in refused {
            assert!(!printable(c), "U+{:04X} passed", c as u32);
        }
        let allowed = [
            'a', ' ', '\u{A0}', '-', 'é', 'ß', '中', 'ن', '😀', '\u{FFFD}', '\u{2027}', '\u{FDCF}',
        ];
        for c in allowed {
            assert!(printable(c), "U+{:04X} refused", c as u32);
        }
    }

    #[test]
    fn echo_shows_a_short_escaped_prefix() {
        assert_eq!(echo("ghost"), "ghost");
        assert_eq!(echo(&"x".repeat(64)), "x".repeat(64));
        assert_eq!(echo(&"x".repeat(1 << 20)), format!("{}…", "x".repeat(64)));
        assert_eq!(echo("a\u{202E}b\n"), "a\\u{202e}b\\u{a}");
    }
}
