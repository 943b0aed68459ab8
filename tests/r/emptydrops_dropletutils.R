# DropletUtils' emptyDrops on a raw barcode x gene MatrixMarket file: the reference that
# tests/test_emptydrops_dropletutils.py and tests/benchmarks/bench_emptydrops.py compare
# kbagg.cells.emptydrops.empty_drops with.
#
#   Rscript tests/r/emptydrops_dropletutils.R RAW.mtx OUT.csv LOWER NITERS SEED
#
# RAW.mtx: barcodes x genes counts (scipy.io.mmwrite). OUT.csv: one row per barcode, in
# the file's order: Total, LogProb, PValue, Limited, FDR (NA for untested barcodes). Prints
# "alpha <value>", "retain <value>" and "emptydrops_seconds <value>" on stdout.
# Everything else is emptyDrops' defaults (alpha = NULL: estimated; retain = NULL: knee).
suppressPackageStartupMessages({
    library(Matrix)
    library(DropletUtils)
})
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 5) {
    stop("usage: emptydrops_dropletutils.R RAW.mtx OUT.csv LOWER NITERS SEED")
}
lower <- as.numeric(args[3])
niters <- as.integer(args[4])
seed <- as.integer(args[5])
counts <- as(t(readMM(args[1])), "CsparseMatrix") # genes x barcodes, as DropletUtils wants
set.seed(seed)
start <- proc.time()[["elapsed"]]
result <- emptyDrops(counts, lower = lower, niters = niters)
seconds <- proc.time()[["elapsed"]] - start
out <- data.frame(
    Total = result$Total, LogProb = result$LogProb, PValue = result$PValue,
    Limited = result$Limited, FDR = result$FDR
)
write.csv(out, args[2], row.names = FALSE)
cat("alpha", metadata(result)$alpha, "\n")
cat("retain", metadata(result)$retain, "\n")
cat("emptydrops_seconds", seconds, "\n")
