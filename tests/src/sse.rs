//! Server-Sent Events as a client library reads them (`eventsource-stream`),
//! so that the framing is checked by a parser that is not the server's.

use crate::Response;
use eventsource_stream::Eventsource;
use std::io::Read;

pub use eventsource_stream::Event;

/// The events of an SSE response, read as they arrive. A framing error ends
/// the iteration with a panic naming it.
pub fn events(mut response: Response) -> impl Iterator<Item = Event> {
    let chunks = std::iter::from_fn(move || {
        let mut buf = vec![0; 4096];
        match response.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(buf))
            }
            Err(e) => Some(Err(e)),
        }
    });
    futures::executor::block_on_stream(futures::stream::iter(chunks).eventsource())
        .map(|event| event.unwrap_or_else(|e| panic!("malformed event stream: {e}")))
}
