// FerryCodec: placeholder until the module lands.
