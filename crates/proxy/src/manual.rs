#![doc = include_str!("manual/index.md")]
// Documentation only: each module below is one page of `manual/`, rendered by rustdoc.

pub mod no_key_in_output {
    #![doc = include_str!("manual/no_key_in_output.md")]
}

pub mod fail_closed {
    #![doc = include_str!("manual/fail_closed.md")]
}

pub mod no_connection_when_denied {
    #![doc = include_str!("manual/no_connection_when_denied.md")]
}

pub mod upstream_host {
    #![doc = include_str!("manual/upstream_host.md")]
}

pub mod tier_isolation {
    #![doc = include_str!("manual/tier_isolation.md")]
}
