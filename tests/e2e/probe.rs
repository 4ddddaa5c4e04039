//! End-to-end tests of baton-probe beside a real bot server and the router.
