//! Akash SDL support: the rule checker (`lifeboat sdl check`: Akash's own rules in [`akash`],
//! lifeboat's in [`rules`]) and the rewrite that puts a service under lifeboat
//! (`lifeboat sdl inject`). The snippets in `sdl-snippets/` pass both.

pub mod akash;
pub mod inject;
pub mod rules;

pub use inject::{InjectOptions, Injected, Mode, inject};

/// What `sdl check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Akash refuses the file (its own validator's rules), or lifeboat does (its control port
    /// exposed globally). Each names the line and the key.
    pub errors: Vec<String>,
    /// Accepted by Akash, but likely not what was meant.
    pub warnings: Vec<String>,
}

/// Akash's rules ([`akash`]) and lifeboat's ([`rules`]) on SDL text.
pub fn check(text: &str) -> Report {
    let mut errors: Vec<String> = akash::validate(text)
        .iter()
        .map(|p| p.to_string())
        .collect();
    let mut warnings = Vec::new();
    if let Ok(sdl) = rules::parse(text, "the SDL") {
        errors.extend(rules::lifeboat_errors(&sdl));
        warnings = rules::warnings(&sdl, text);
    }
    Report { errors, warnings }
}
