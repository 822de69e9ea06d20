"""STCFormer report: STTFormer, STCFormer, STCFormer-AR, STACFormer and ConvSTGAT, 10 -> 25 frames of 3D joints."""
