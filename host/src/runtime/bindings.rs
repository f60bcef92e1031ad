//! The one `bindgen!` of the host: Rust types and traits for the `beehive:broker/consumer`
//! world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "consumer",
    exports: { default: async },
    // Batches are lowered into the guest straight from the host's events, without copying
    // each event into owned strings first.
    ownership: Borrowing { duplicate_if_necessary: true },
});
