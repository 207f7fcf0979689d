//! A small EDN reader: turns text into [`Value`]s, one top-level form at a time, with the line
//! and column of every error.
//!
//! It reads the subset of EDN that Jepsen histories use (nil, booleans, integers, floats,
//! strings, characters, keywords, symbols, vectors, lists, maps, sets, `#_` discards and tagged
//! literals, whose tag it drops). It must not interpret forms as operations; that is
//! `edn_history`'s job.

use crate::error::{Error, Result};
use crate::limits::MAX_EDN_DEPTH;
use crate::value::Value;

/// A form read by [`EdnReader::read_item`]: keywords stay borrowed from the text.
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    /// A keyword's name, without the colon.
    Keyword(&'a str),
    /// Any other value.
    Value(Value),
}

impl Item<'_> {
    /// The name of a keyword, string or symbol.
    pub fn name(&self) -> Option<&str> {
        match self {
            Item::Keyword(k) => Some(k),
            Item::Value(Value::Keyword(k) | Value::Str(k) | Value::Symbol(k)) => Some(k),
            Item::Value(_) => None,
        }
    }

    /// The item as an owned value.
    pub fn into_value(self) -> Value {
        match self {
            Item::Keyword(k) => Value::Keyword(k.to_string()),
            Item::Value(v) => v,
        }
    }
}

/// Reads EDN forms from a string.
pub struct EdnReader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
    line_start: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl<'a> EdnReader<'a> {
    /// A reader at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        EdnReader {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            line: 1,
            line_start: 0,
        }
    }

    /// The 1-based line the reader is on.
    pub fn line(&self) -> usize {
        self.line
    }

    /// The next top-level form with the line it starts on, or `None` at the end of the text.
    pub fn next_form(&mut self) -> Result<Option<(usize, Value)>> {
        self.skip_blank()?;
        if self.pos >= self.bytes.len() {
            return Ok(None);
        }
        let line = self.line;
        let value = self.read_form(0)?;
        Ok(Some((line, value)))
    }

    /// Reads exactly one form from `text` (blank text around it allowed).
    pub fn parse_one(text: &str) -> Result<Value> {
        let mut reader = EdnReader::new(text);
        let Some((_, value)) = reader.next_form()? else {
            return Err(reader.error("expected an EDN value, found nothing"));
        };
        reader.skip_blank()?;
        if reader.pos < reader.bytes.len() {
            return Err(reader.error("unexpected text after the value"));
        }
        Ok(value)
    }

    /// Opens a top-level collection: if the next form starts with `[` or `(`, consumes the
    /// bracket and returns its closing byte. The elements are then read with
    /// [`EdnReader::try_close`] and [`EdnReader::read_item`].
    pub fn open_top_collection(&mut self) -> Result<Option<u8>> {
        self.skip_blank()?;
        match self.peek() {
            Some(b'[') => {
                self.bump();
                Ok(Some(b']'))
            }
            Some(b'(') => {
                self.bump();
                Ok(Some(b')'))
            }
            _ => Ok(None),
        }
    }

    /// Skips blanks; true (and consumes it) when the next byte is `close`. An end of text
    /// before it is an error.
    pub fn try_close(&mut self, close: u8) -> Result<bool> {
        self.skip_blank()?;
        match self.peek() {
            None => Err(self.error(&format!(
                "unexpected end of text: '{}' expected",
                close as char
            ))),
            Some(b) if b == close => {
                self.bump();
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// Skips blanks; true at the end of the text.
    pub fn at_end(&mut self) -> Result<bool> {
        self.skip_blank()?;
        Ok(self.pos >= self.bytes.len())
    }

    /// If the next form is a map (plain or tagged, as `#jepsen.history.Op{...}`), consumes up
    /// to its opening brace and returns true; otherwise consumes nothing.
    pub fn open_map(&mut self) -> Result<bool> {
        self.skip_blank()?;
        let mut probe = self.pos;
        if self.peek() == Some(b'#')
            && self
                .bytes
                .get(probe + 1)
                .is_some_and(u8::is_ascii_alphabetic)
        {
            probe += 1;
            while self.bytes.get(probe).is_some_and(|&b| !is_delimiter(b)) {
                probe += 1;
            }
        }
        if self.bytes.get(probe) != Some(&b'{') {
            return Ok(false);
        }
        self.pos = probe + 1;
        Ok(true)
    }

    /// Reads one form, returning a keyword as a name borrowed from the text (no allocation).
    pub fn read_item(&mut self) -> Result<Item<'a>> {
        self.skip_blank()?;
        if self.peek() == Some(b':') {
            self.bump();
            let name = self.token();
            if name.is_empty() {
                return Err(self.error("a keyword needs a name after ':'"));
            }
            return Ok(Item::Keyword(name));
        }
        Ok(Item::Value(self.read_form(1)?))
    }

    /// Reads one form.
    pub fn read_value(&mut self) -> Result<Value> {
        self.read_form(1)
    }

    /// An error at the reader's position.
    pub fn error_here(&self, message: &str) -> Error {
        self.error(message)
    }

    /// Fails unless only blanks and comments remain.
    pub fn expect_end(&mut self, what: &str) -> Result<()> {
        self.skip_blank()?;
        if self.pos < self.bytes.len() {
            return Err(self.error(&format!("unexpected text after {what}")));
        }
        Ok(())
    }

    fn column(&self) -> usize {
        self.column_at(self.line_start, self.pos)
    }

    /// The 1-based column (in characters) of byte `pos` on the line starting at `line_start`.
    fn column_at(&self, line_start: usize, pos: usize) -> usize {
        let start = line_start.min(self.text.len());
        let end = pos.min(self.text.len()).max(start);
        self.text
            .get(start..end)
            .map_or(end - start, |s| s.chars().count())
            + 1
    }

    fn error(&self, message: &str) -> Error {
        Error::Syntax {
            line: self.line,
            column: self.column(),
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if let Some(&b) = self.bytes.get(self.pos) {
            self.pos += 1;
            if b == b'\n' {
                self.line += 1;
                self.line_start = self.pos;
            }
        }
    }

    fn skip_blank(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() || b == b',' => self.bump(),
                Some(b';') => {
                    while let Some(b) = self.peek() {
                        if b == b'\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                Some(b'#') if self.bytes.get(self.pos + 1) == Some(&b'_') => {
                    self.bump();
                    self.bump();
                    self.skip_blank()?;
                    self.read_form(1)?;
                }
                _ => return Ok(()),
            }
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        self.text.get(start..self.pos).unwrap_or("")
    }

    fn read_form(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_EDN_DEPTH {
            return Err(self.error(&format!(
                "collections nested deeper than {MAX_EDN_DEPTH} levels (MAX_EDN_DEPTH)"
            )));
        }
        self.skip_blank()?;
        let Some(b) = self.peek() else {
            return Err(self.error("unexpected end of text: a value was expected"));
        };
        match b {
            b'[' => {
                self.bump();
                Ok(Value::Vector(self.read_seq(b']', depth)?))
            }
            b'(' => {
                self.bump();
                Ok(Value::Vector(self.read_seq(b')', depth)?))
            }
            b'{' => {
                self.bump();
                self.read_map(depth)
            }
            b'"' => self.read_string(),
            b'\\' => self.read_char(),
            b':' => {
                self.bump();
                let name = self.token();
                if name.is_empty() {
                    return Err(self.error("a keyword needs a name after ':'"));
                }
                Ok(Value::Keyword(name.to_string()))
            }
            b'#' => self.read_dispatch(depth),
            b')' | b']' | b'}' => Err(self.error(&format!("unmatched '{}'", b as char))),
            _ => self.read_atom(),
        }
    }

    fn read_seq(&mut self, close: u8, depth: usize) -> Result<Vec<Value>> {
        let opened = (self.line, self.line_start, self.pos.saturating_sub(1));
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                None => {
                    return Err(Error::Syntax {
                        line: opened.0,
                        column: self.column_at(opened.1, opened.2),
                        message: format!(
                            "the collection opened here is not closed: '{}' expected before the \
                             end of the text",
                            close as char
                        ),
                    })
                }
                Some(b) if b == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(_) => items.push(self.read_form(depth + 1)?),
            }
        }
    }

    fn read_map(&mut self, depth: usize) -> Result<Value> {
        let items = self.read_seq(b'}', depth)?;
        if items.len() % 2 != 0 {
            return Err(self.error("a map needs an even number of forms (a value for every key)"));
        }
        let mut entries = Vec::with_capacity(items.len() / 2);
        let mut iter = items.into_iter();
        while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }

    fn read_dispatch(&mut self, depth: usize) -> Result<Value> {
        self.bump();
        match self.peek() {
            Some(b'{') => {
                self.bump();
                Ok(Value::Set(self.read_seq(b'}', depth)?))
            }
            Some(b'#') => {
                self.bump();
                match self.token() {
                    "Inf" => Ok(Value::Float(f64::INFINITY)),
                    "-Inf" => Ok(Value::Float(f64::NEG_INFINITY)),
                    "NaN" => Ok(Value::Float(f64::NAN)),
                    other => Err(self.error(&format!("unknown symbolic value ##{other}"))),
                }
            }
            Some(b) if b.is_ascii_alphabetic() => {
                // A tagged literal such as #inst "..." or #jepsen.history.Op{...}: keep the value.
                let _tag = self.token();
                self.read_form(depth + 1)
            }
            _ => Err(self.error("unsupported '#' form (expected #{, #_, ## or a tag)")),
        }
    }

    fn read_string(&mut self) -> Result<Value> {
        let opened = (self.line, self.line_start, self.pos);
        self.bump();
        let mut out = String::new();
        loop {
            let start = self.pos;
            let rest = self.bytes.get(start..).unwrap_or(&[]);
            let length = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .unwrap_or(rest.len());
            let segment = &rest[..length];
            if let Some(last_newline) = segment.iter().rposition(|&b| b == b'\n') {
                self.line += segment.iter().filter(|&&b| b == b'\n').count();
                self.line_start = start + last_newline + 1;
            }
            self.pos = start + length;
            out.push_str(self.text.get(start..self.pos).unwrap_or(""));
            match self.peek() {
                None => {
                    return Err(Error::Syntax {
                        line: opened.0,
                        column: self.column_at(opened.1, opened.2),
                        message: "the string that starts here is not closed (missing '\"')"
                            .to_string(),
                    })
                }
                Some(b'"') => {
                    self.bump();
                    return Ok(Value::Str(out));
                }
                Some(_) => {
                    self.bump();
                    let Some(e) = self.peek() else {
                        return Err(self.error("unexpected end of text after '\\' in a string"));
                    };
                    self.bump();
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'u' => {
                            let hex = self.text.get(self.pos..self.pos + 4).unwrap_or("");
                            let code = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32);
                            let Some(c) = code else {
                                return Err(self.error("bad \\u escape: four hex digits expected"));
                            };
                            for _ in 0..4 {
                                self.bump();
                            }
                            out.push(c);
                        }
                        other => {
                            return Err(self.error(&format!(
                                "unknown escape '\\{}' in a string",
                                other as char
                            )))
                        }
                    }
                }
            }
        }
    }

    fn read_char(&mut self) -> Result<Value> {
        self.bump();
        let start = self.pos;
        // The first character is taken even if it is a delimiter (e.g. `\(`).
        if let Some(c) = self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            for _ in 0..c.len_utf8() {
                self.bump();
            }
        }
        while let Some(b) = self.peek() {
            if is_delimiter(b) {
                break;
            }
            self.pos += 1;
        }
        let name = self.text.get(start..self.pos).unwrap_or("");
        let c = match name {
            "newline" => "\n",
            "space" => " ",
            "tab" => "\t",
            "return" => "\r",
            s if s.chars().count() == 1 => s,
            _ => return Err(self.error(&format!("unknown character literal \\{name}"))),
        };
        Ok(Value::Str(c.to_string()))
    }

    fn read_atom(&mut self) -> Result<Value> {
        let line = self.line;
        let (line_start, start) = (self.line_start, self.pos);
        let token = self.token();
        let column = || self.column_at(line_start, start);
        if token.is_empty() {
            let error = Error::Syntax {
                line,
                column: column(),
                message: "unexpected character".to_string(),
            };
            self.bump();
            return Err(error);
        }
        let bad = |message: String| Error::Syntax {
            line,
            column: column(),
            message,
        };
        match token {
            "nil" => return Ok(Value::Nil),
            "true" => return Ok(Value::Bool(true)),
            "false" => return Ok(Value::Bool(false)),
            _ => {}
        }
        let bytes = token.as_bytes();
        let digit_at = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_digit);
        let numeric = digit_at(0) || (matches!(bytes[0], b'-' | b'+') && digit_at(1));
        if !numeric {
            return Ok(Value::Symbol(token.to_string()));
        }
        let int_text = token.strip_suffix('N').unwrap_or(token);
        if let Ok(i) = int_text.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        if int_text.bytes().skip(1).all(|b| b.is_ascii_digit()) {
            return Err(bad(format!("integer {token} does not fit in 64 bits")));
        }
        let float_text = token.strip_suffix('M').unwrap_or(token);
        match float_text.parse::<f64>() {
            Ok(x) => Ok(Value::Float(x)),
            Err(_) => Err(bad(format!("'{token}' is not a number EDN can read"))),
        }
    }
}
