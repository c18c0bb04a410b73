//! A blocking [`std::io::Write`] that hands each write to an async receiver: how a NAR dumped
//! on a blocking thread reaches a client (the worker protocol's export, the served cache).

use tokio::sync::mpsc::Sender;

/// Sends each buffer written, made into a `T` by its second field, down the channel; a write
/// fails with `BrokenPipe` once the receiver is gone. Blocking: use it off the async threads.
pub(crate) struct ChannelWriter<T>(pub Sender<T>, pub fn(&[u8]) -> T);

impl<T> std::io::Write for ChannelWriter<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send((self.1)(buf))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
