//! Turning one decoded source image into patches: where to cut them
//! ([`tiling`]), which to keep ([`tissue`]), how to vary them ([`augment`]) and
//! how to even out stain colour between labs ([`stain`]).

pub mod augment;
pub mod stain;
pub mod tiling;
pub mod tissue;
