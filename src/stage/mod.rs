//! Stage logic: synchronous code over plain data, driven by the runner. No Kafka, no
//! clocks: processing time comes in as an argument.

pub mod aggregate;
pub mod alert;
pub mod analyze;
pub mod assemble;
pub mod detect;
pub mod pipeline;
pub mod watermark;
