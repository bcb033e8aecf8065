//! The memcached text protocol, for the data store (issue 4): the parser and the reply
//! encoding, sans-IO. The store and the server come next; this module is what turns
//! untrusted bytes from clients into commands, so it is built to never panic and to
//! bound every allocation (see [`protocol`]).

pub mod protocol;
