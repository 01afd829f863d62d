//! A channel whose audio travels through queues that someone else fills and drains (the
//! fast path's ring reading and writing the channel's file descriptor), while its ioctls
//! (hook, cadence, events...) still go to the channel itself. The line drivers use it
//! unchanged: reads come from the queue, writes go to the queue, an ELAST read result makes
//! reads and writes refused until the event is fetched, exactly as the kernel does.

use super::abi::DahdiParams;
use super::channel::{Channel, ChannelError, ELAST};
use std::collections::VecDeque;

/// Blocks queued either way before the oldest is dropped (the other side stopped).
const QUEUE: usize = 32;

/// A channel with queued audio.
#[derive(Debug)]
pub struct QueuedChannel<C: Channel> {
    inner: C,
    received: VecDeque<Vec<u8>>,
    to_send: VecDeque<Vec<u8>>,
    event_pending: bool,
}

impl<C: Channel> QueuedChannel<C> {
    /// Wraps `inner`, whose reads and writes will come through the queues.
    pub fn new(inner: C) -> QueuedChannel<C> {
        QueuedChannel {
            inner,
            received: VecDeque::new(),
            to_send: VecDeque::new(),
            event_pending: false,
        }
    }

    /// The wrapped channel.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// A read of the descriptor completed with this block.
    pub fn push_read(&mut self, block: &[u8]) {
        if self.received.len() == QUEUE {
            self.received.pop_front();
        }
        self.received.push_back(block.to_vec());
    }

    /// A read of the descriptor failed with `errno` (ELAST: an event waits).
    pub fn push_error(&mut self, errno: i32) {
        if errno == ELAST {
            self.event_pending = true;
        }
    }

    /// The blocks written since the last call, oldest first.
    pub fn take_writes(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.to_send.drain(..)
    }
}

impl<C: Channel> Channel for QueuedChannel<C> {
    fn set_blocksize(&mut self, samples: usize) -> Result<(), ChannelError> {
        self.inner.set_blocksize(samples)
    }

    fn read(&mut self, block: &mut [u8]) -> Result<usize, ChannelError> {
        if self.event_pending {
            return Err(ChannelError::EventPending);
        }
        let data = self.received.pop_front().ok_or(ChannelError::WouldBlock)?;
        let n = data.len().min(block.len());
        block[..n].copy_from_slice(&data[..n]);
        Ok(n)
    }

    fn write(&mut self, block: &[u8]) -> Result<usize, ChannelError> {
        if self.event_pending {
            return Err(ChannelError::EventPending);
        }
        if self.to_send.len() == QUEUE {
            return Err(ChannelError::WouldBlock);
        }
        self.to_send.push_back(block.to_vec());
        Ok(block.len())
    }

    fn get_event(&mut self) -> Result<i32, ChannelError> {
        self.event_pending = false;
        self.inner.get_event()
    }

    fn hook(&mut self, operation: i32) -> Result<(), ChannelError> {
        self.inner.hook(operation)
    }

    fn set_cadence(&mut self, cadence_ms: &[u32]) -> Result<(), ChannelError> {
        self.inner.set_cadence(cadence_ms)
    }

    fn flush(&mut self, what: i32) -> Result<(), ChannelError> {
        self.received.clear();
        self.to_send.clear();
        self.inner.flush(what)
    }

    fn params(&mut self) -> Result<DahdiParams, ChannelError> {
        self.inner.params()
    }

    fn set_polarity(&mut self, reversed: bool) -> Result<(), ChannelError> {
        self.inner.set_polarity(reversed)
    }

    fn onhook_transfer(&mut self, ms: u32) -> Result<(), ChannelError> {
        self.inner.onhook_transfer(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dahdi::abi::event;
    use crate::dahdi::emulator::EmulatedCard;
    use crate::dahdi::system_conf::SystemConf;
    use std::path::Path;

    #[test]
    fn audio_comes_from_the_queue_and_an_event_blocks_it_until_fetched() {
        let conf = SystemConf::parse("fxoks=1\nloadzone=us\n", Path::new("s")).unwrap();
        let card = EmulatedCard::new(&conf);
        let mut channel = QueuedChannel::new(card.open(1).unwrap());
        let mut block = [0u8; 160];
        assert_eq!(channel.read(&mut block), Err(ChannelError::WouldBlock));
        channel.push_read(&[7; 160]);
        assert_eq!(channel.read(&mut block), Ok(160));
        assert_eq!(block[0], 7);
        assert_eq!(channel.write(&[1; 160]), Ok(160));
        assert_eq!(
            channel.take_writes().collect::<Vec<_>>(),
            vec![vec![1u8; 160]]
        );
        // The phone lifts: the ring's read fails with ELAST, the event is fetched by ioctl.
        card.lift(1);
        card.advance(20);
        channel.push_error(ELAST);
        channel.push_read(&[9; 160]);
        assert_eq!(channel.read(&mut block), Err(ChannelError::EventPending));
        assert_eq!(channel.write(&[1; 160]), Err(ChannelError::EventPending));
        assert_eq!(channel.get_event(), Ok(event::RINGOFFHOOK));
        assert_eq!(channel.read(&mut block), Ok(160));
        assert_eq!(block[0], 9);
    }
}
