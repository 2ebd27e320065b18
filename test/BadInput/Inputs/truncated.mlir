moe.model @m attributes {vocab_size = -1} {
