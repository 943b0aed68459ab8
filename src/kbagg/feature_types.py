"""The library types of a sample (Cell Ranger multi's names) and the modality each becomes.

A sample sheet's optional `feature_type` column uses these names; rows of one sample with
different types are libraries of the same cells. Light on purpose: the workflow reads it at
parse time.
"""

GENE_EXPRESSION = "Gene Expression"
ANTIBODY_CAPTURE = "Antibody Capture"
MULTIPLEXING_CAPTURE = "Multiplexing Capture"
CRISPR_GUIDE_CAPTURE = "CRISPR Guide Capture"
# Cell Ranger multi's library types, and the MuData modality each becomes.
MODALITY = {
    GENE_EXPRESSION: "rna",
    ANTIBODY_CAPTURE: "prot",
    MULTIPLEXING_CAPTURE: "hashtag",
    CRISPR_GUIDE_CAPTURE: "crispr",
}
FEATURE_TYPES = tuple(MODALITY)
BARCODED_FEATURE_TYPES = FEATURE_TYPES[1:]  # the types a feature reference holds
FEATURE_TYPE_OF = {modality: feature_type for feature_type, modality in MODALITY.items()}
