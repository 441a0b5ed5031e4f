//! Typed embedded storage of Netabase.
