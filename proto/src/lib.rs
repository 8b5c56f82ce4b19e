//! Wire messages and transports shared by the lego components.
//!
//! Empty until the ExCache issue: the vNode runner alone talks to no other component.
