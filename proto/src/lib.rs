//! Singularity's wire contract: the `.proto` files of the client, operator, agent and
//! replica-to-replica gRPC services, the tonic/prost code generated from them, and conversions
//! between those messages and `singularity-scheduler` model types.
//!
//! It must not hold logic beyond conversion and validation of wire messages: no scheduling
//! decisions, no storage, no I/O. Nothing lives here yet; the control-plane issue fills it.
