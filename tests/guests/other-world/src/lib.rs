//! A component of another world: it exports `run` instead of Beehive's handler.

#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    inline: "package test:other; world other { export run: func() -> u32; }",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
