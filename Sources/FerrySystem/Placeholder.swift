// FerrySystem: placeholder until the module lands.
