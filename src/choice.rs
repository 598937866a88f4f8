//! Closed sets of named values — `--format png`, `--model resnet18` — listed
//! once per type with the name a user types and a line on what it does.
//! `FromStr` and `Display` use those names, and the command line (`src/cli`)
//! builds its accepted values and their help from the same list, so the
//! library needs no command-line parser.

/// One named value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice<T: 'static> {
    pub value: T,
    /// What a user types, and what `Display` writes.
    pub name: &'static str,
    /// Other spellings accepted (not listed in help).
    pub aliases: &'static [&'static str],
    /// What the value does, for help; empty for none.
    pub help: &'static str,
}

/// A type whose values a user picks by name.
pub trait Choices: Copy + PartialEq + 'static {
    /// Every value, in the order help lists them.
    const CHOICES: &'static [Choice<Self>];

    /// The name a user types for `self`.
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|c| c.value == self)
            .map_or("", |c| c.name)
    }

    /// The value named (or aliased) `s`.
    fn from_name(s: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|c| c.name == s || c.aliases.contains(&s))
            .map(|c| c.value)
    }

    /// "a, b or c", for error messages.
    fn listed() -> String {
        let names: Vec<&str> = Self::CHOICES.iter().map(|c| c.name).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

/// Declares the named values of an enum: [`Choices`], and `FromStr` and
/// `Display` through those names.
///
/// ```ignore
/// choices!(EdgePolicy {
///     Drop = "drop": "Leave it out",
///     Shift = "shift" | "flush": "Add one more patch flush with the edge",
///     Pad = "pad",
/// });
/// ```
#[macro_export]
macro_rules! choices {
    ($t:ident { $($v:ident = $name:literal $(| $alias:literal)* $(: $help:literal)?),+ $(,)? }) => {
        impl $crate::choice::Choices for $t {
            const CHOICES: &'static [$crate::choice::Choice<Self>] = &[$(
                $crate::choice::Choice {
                    value: $t::$v,
                    name: $name,
                    aliases: &[$($alias),*],
                    help: $crate::choices!(@help $($help)?),
                }
            ),+];
        }

        impl ::std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> ::std::result::Result<Self, String> {
                <Self as $crate::choice::Choices>::from_name(s).ok_or_else(|| {
                    format!(
                        "unknown value {s:?} (expected {})",
                        <Self as $crate::choice::Choices>::listed()
                    )
                })
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::choice::Choices::name(*self))
            }
        }
    };
    (@help $help:literal) => { $help };
    (@help) => { "" };
}

#[cfg(test)]
mod tests {
    use super::Choices;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Fruit {
        Apple,
        Pear,
        Quince,
    }

    crate::choices!(Fruit {
        Apple = "apple": "Red or green",
        Pear = "pear" | "poire",
        Quince = "quince",
    });

    #[test]
    fn names_aliases_display_and_errors() {
        assert_eq!("apple".parse::<Fruit>(), Ok(Fruit::Apple));
        assert_eq!("poire".parse::<Fruit>(), Ok(Fruit::Pear));
        assert_eq!(Fruit::Pear.to_string(), "pear");
        assert_eq!(Fruit::CHOICES[0].help, "Red or green");
        assert_eq!(Fruit::CHOICES[1].help, "");
        let err = "plum".parse::<Fruit>().unwrap_err();
        assert_eq!(
            err,
            "unknown value \"plum\" (expected apple, pear or quince)"
        );
    }
}
