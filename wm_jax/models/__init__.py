"""World-model families, one module each (see DESIGN.md): `rssm` holds DreamerV1, V2 and V3."""
