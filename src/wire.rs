//! The wire contract (`proto/mishare/v1/exchange.proto`), generated at build
//! time.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    reason = "generated code"
)]
pub mod v1 {
    tonic::include_proto!("mishare.v1");
}
