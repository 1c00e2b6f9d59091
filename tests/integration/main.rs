//! One integration-test binary: every black-box test module is compiled and linked once.
