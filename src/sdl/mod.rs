//! Akash SDL support: the rule checker (`lifeboat sdl check`) and the rewrite that puts a
//! service under lifeboat (`lifeboat sdl inject`). The snippets in `sdl-snippets/` pass both.

pub mod inject;
pub mod rules;

pub use inject::{InjectOptions, Injected, Mode, inject};
pub use rules::check;
