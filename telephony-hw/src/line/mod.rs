//! Analog line state machines, sans-IO: they take DAHDI events, detected digits, control
//! plane commands and the time, and return actions for a driver to perform on a channel.

pub mod dial_plan;
pub mod driver;
pub mod line_port;
pub mod phone_port;
