//! Text that goes into the upstream XML stream.
//!
//! Every value interpolated into a stanza we send (JIDs, nicks, ids, passwords, an archive
//! query's `<after>`) goes through [`XmlText`], which can only be made from a string whose every
//! character is an XML 1.0 `Char` and whose length is bounded; it displays escaped. One byte
//! outside `Char` (a C0 control, U+FFFE, U+FFFF) makes the server answer `not-well-formed` and
//! drop the whole component link, so nothing a client sends may reach the stream unchecked.

use std::borrow::Cow;
use std::fmt;

/// Longest value accepted (a full JID is at most 3071 bytes).
pub const MAX_TEXT: usize = 4096;

/// Why a value cannot go into upstream XML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadText {
    /// Over [`MAX_TEXT`] bytes.
    TooLong(usize),
    /// A character XML 1.0 forbids.
    Forbidden(char),
}

impl fmt::Display for BadText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadText::TooLong(n) => write!(f, "{n} bytes, more than {MAX_TEXT}"),
            BadText::Forbidden(c) => write!(f, "holds U+{:04X}, which XML forbids", *c as u32),
        }
    }
}

impl std::error::Error for BadText {}

/// XML 1.0 `Char`: `#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`
/// (a Rust `char` is never a surrogate).
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A checked, escaped value for an attribute or text node of a stanza we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlText<'a>(Cow<'a, str>);

impl<'a> XmlText<'a> {
    /// Checks `raw` and escapes `< > & ' "`.
    pub fn new(raw: &'a str) -> Result<XmlText<'a>, BadText> {
        if raw.len() > MAX_TEXT {
            return Err(BadText::TooLong(raw.len()));
        }
        if let Some(c) = raw.chars().find(|&c| !is_xml_char(c)) {
            return Err(BadText::Forbidden(c));
        }
        Ok(XmlText(quick_xml::escape::escape(raw)))
    }

    /// The escaped form, as it goes on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for XmlText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_text_and_escapes_markup() {
        let t = XmlText::new("a<b>&'\"é🎉\t\n").unwrap();
        assert_eq!(t.as_str(), "a&lt;b&gt;&amp;&apos;&quot;é🎉\t\n");
    }

    #[test]
    fn refuses_what_xml_forbids() {
        for bad in [
            "\u{1}",
            "x\u{0}",
            "\u{1b}[2J",
            "\u{fffe}",
            "\u{ffff}",
            "\u{7}",
        ] {
            assert!(
                matches!(XmlText::new(bad), Err(BadText::Forbidden(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            XmlText::new(&"a".repeat(MAX_TEXT + 1)),
            Err(BadText::TooLong(MAX_TEXT + 1))
        );
        assert!(XmlText::new(&"a".repeat(MAX_TEXT)).is_ok());
        assert!(XmlText::new("\u{fffd}\u{10ffff}\u{e000}").is_ok());
    }

    #[test]
    fn escaped_text_parses_back_to_the_original() {
        let raw = "<x a='1'>&amp;\"";
        let doc = format!(
            "<r a='{}'>{}</r>",
            XmlText::new(raw).unwrap(),
            XmlText::new(raw).unwrap()
        );
        let e = crate::xmpp::stream::Element::parse(doc.as_bytes(), "").unwrap();
        assert_eq!(e.attr("a"), Some(raw));
        assert_eq!(e.text, raw);
    }
}
