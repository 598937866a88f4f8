//! The library's named values ([`Choices`]) as clap values: the names a flag
//! accepts and the help listing them come from the library's one list.

use std::{ffi::OsStr, marker::PhantomData};

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use histoshard::choice::Choices;

/// The value parser of a flag that takes one of `T`'s names:
/// `#[arg(long, value_parser = choice::<EdgePolicy>())]`.
pub fn choice<T: Choices + Send + Sync>() -> ChoiceParser<T> {
    ChoiceParser(PhantomData)
}

#[derive(Clone, Copy)]
pub struct ChoiceParser<T>(PhantomData<T>);

fn possible_values<T: Choices>() -> impl Iterator<Item = PossibleValue> {
    T::CHOICES.iter().map(|c| {
        let value = PossibleValue::new(c.name).aliases(c.aliases.iter().copied());
        if c.help.is_empty() {
            value
        } else {
            value.help(c.help)
        }
    })
}

impl<T: Choices + Send + Sync> TypedValueParser for ChoiceParser<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own check and message for a name that is not one of `T`'s.
        let name = PossibleValuesParser::new(possible_values::<T>()).parse_ref(cmd, arg, value)?;
        T::from_name(&name)
            .ok_or_else(|| clap::Error::new(clap::error::ErrorKind::InvalidValue).with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(possible_values::<T>()))
    }
}
