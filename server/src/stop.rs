//! Stop strings over streamed text: text is released only once no stop string can begin in it,
//! and a stop string found ends the text before it (OpenAI leaves the stop string out).

/// Streamed text checked against a request's stop strings.
#[derive(Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    /// Text received and not yet released: it may be the start of a stop string.
    held: String,
}

/// What one piece of text gives the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    /// Text that is safe to send now.
    pub text: String,
    /// Whether a stop string was found (generation ends; the rest is dropped).
    pub stopped: bool,
}

impl StopText {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece` and releases what can no longer be part of a stop string.
    pub fn push(&mut self, piece: &str) -> Released {
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.held.truncate(at);
            return Released {
                text: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.longest_open_prefix();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Released {
            text,
            stopped: false,
        }
    }

    /// Releases whatever is held (generation ended for another reason).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of the held text that begin some stop string.
    fn longest_open_prefix(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|s| s.char_indices().skip(1).map(|(i, _)| &s[..i]))
            .filter(|prefix| self.held.ends_with(prefix))
            .map(str::len)
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut s = StopText::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let r = s.push(p);
            out.push_str(&r.text);
            if r.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stop_strings_end_the_text_and_prefixes_are_held() {
        // Split across pieces, inside one piece, with text after it.
        assert_eq!(
            run(&["END"], &["ab", "cE", "N", "Dxyz"]),
            ("abc".into(), true)
        );
        assert_eq!(run(&["END"], &["abcENDxyz"]), ("abc".into(), true));
        // A prefix that does not complete is released at the end.
        assert_eq!(run(&["END"], &["abE", "N"]), ("abEN".into(), false));
        // The earliest of several stop strings wins.
        assert_eq!(run(&["yz", "b"], &["abcxyz"]), ("a".into(), true));
        // No stop strings, or empty ones: everything passes at once.
        let mut s = StopText::new(&["".into()]);
        assert_eq!(
            s.push("héllo"),
            Released {
                text: "héllo".into(),
                stopped: false
            }
        );
        // Multi-byte characters are held whole.
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        let mut s = StopText::new(&["é!".into()]);
        assert_eq!(s.push("café").text, "caf");
        assert_eq!(s.push("?").text, "é?");
    }
}
