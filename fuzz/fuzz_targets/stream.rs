//! Stream parser: never panics, and the messages it yields do not depend on
//! how the bytes are split into chunks.
//!
//! The first input byte chooses the chunk size (1..=64); the rest is the
//! stream. It is fed once in chunks of that size, draining messages after
//! each push, and once whole; both runs must give the same messages and end
//! the same way (an error in both or in neither).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_cpim_gateway::sip::{Limits, Message, ParseError, StreamParser};

/// Messages taken before the first error (if any).
struct Outcome {
    messages: Vec<Message>,
    error: Option<ParseError>,
}

fn drain(p: &mut StreamParser, out: &mut Outcome) -> bool {
    loop {
        match p.next_message() {
            Ok(Some(m)) => out.messages.push(m),
            Ok(None) => return true,
            Err(e) => {
                out.error = Some(e);
                return false;
            }
        }
    }
}

fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut p = StreamParser::new(Limits::default());
    let mut out = Outcome {
        messages: Vec::new(),
        error: None,
    };
    for chunk in chunks {
        p.push(chunk);
        if !drain(&mut p, &mut out) {
            break;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;

    let chunked = run(stream.chunks(chunk));
    let whole = run(std::iter::once(stream));

    assert_eq!(
        chunked.messages, whole.messages,
        "chunk size {chunk}: messages differ"
    );
    assert_eq!(
        chunked.error.is_some(),
        whole.error.is_some(),
        "chunk size {chunk}: chunked ended with {:?}, whole with {:?}",
        chunked.error,
        whole.error
    );
});
