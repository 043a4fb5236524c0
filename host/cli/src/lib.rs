//! The `folkhub` binary's library half: [`commands`] holds one module per
//! verb, each parsing what `main.rs` hands it and printing what
//! [`folkhub_app`] (the application) does, through [`out!`], which ends
//! quietly on a closed pipe.

/// `println!` for command output: ends quietly when stdout's reader is
/// gone (`folkhub … | head`) instead of panicking ([`output`]).
#[macro_export]
macro_rules! out {
    () => {
        $crate::output::line(::std::format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(::std::format_args!($($arg)*))
    };
}

pub mod commands;
pub mod output;
