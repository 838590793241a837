//! Locating the model on disk, and downloading it from the Hugging Face hub.
