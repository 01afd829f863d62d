//! DAHDI, the Linux driver framework for analog and digital telephony cards: its user-space
//! ABI, checked against the real header.

pub mod abi;
pub mod channel;
pub mod emulator;
pub mod ioctl;
pub mod ports;
pub mod queued;
pub mod system_conf;
