//! The one `bindgen!` of the host: Rust types and traits for the `beehive:broker/consumer`
//! world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "consumer",
    exports: { default: async },
});
