"""CS764 LiftModel: 2D joints to 3D."""
