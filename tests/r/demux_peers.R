#!/usr/bin/env Rscript
# Seurat's HTODemux and MULTIseqDemux on one hashtag count matrix, run for real.
#
#   Rscript tests/r/demux_peers.R counts1.csv calls1.csv [counts2.csv calls2.csv ...]
#
# (several pairs in one call: Seurat loads once.)
# counts.csv: a header row "cell,<hashtag ids>", then one row of raw UMI counts per cell.
# calls.csv: cell, method, call (hashtag id, "doublet" or "negative"), seconds, error.
# Each method runs in tryCatch: a failure becomes rows with an empty call and the error.
suppressPackageStartupMessages(library(Seurat))
args <- commandArgs(trailingOnly = TRUE)

run <- function(object, method, fn) {
  start <- Sys.time()
  result <- tryCatch(
    {
      calls <- fn()
      list(calls = calls, error = "")
    },
    error = function(e) list(calls = rep("", ncol(object)), error = conditionMessage(e))
  )
  seconds <- as.numeric(difftime(Sys.time(), start, units = "secs"))
  data.frame(cell = colnames(object), method = method, call = as.character(result$calls),
             seconds = seconds, error = gsub("[\r\n]+", " ", result$error))
}

demux <- function(counts_csv, calls_csv) {
  counts <- read.csv(counts_csv, row.names = 1, check.names = FALSE)
  object <- CreateSeuratObject(counts = t(as.matrix(counts)), assay = "HTO")
  object <- NormalizeData(object, assay = "HTO", normalization.method = "CLR", verbose = FALSE)
  htodemux <- run(object, "HTODemux", function() {
    set.seed(1)
    out <- HTODemux(object, assay = "HTO", positive.quantile = 0.99, verbose = FALSE)
    global <- as.character(out$HTO_classification.global)
    ifelse(global == "Singlet", as.character(out$hash.ID),
           ifelse(global == "Doublet", "doublet", "negative"))
  })
  multiseq <- run(object, "MULTIseqDemux", function() {
    set.seed(1)
    out <- MULTIseqDemux(object, assay = "HTO", autoThresh = TRUE, verbose = FALSE)
    call <- as.character(out$MULTI_ID)
    ifelse(call == "Doublet", "doublet", ifelse(call == "Negative", "negative", call))
  })
  write.csv(rbind(htodemux, multiseq), calls_csv, row.names = FALSE)
}
for (i in seq(1, length(args), by = 2)) invisible(capture.output(demux(args[i], args[i + 1])))
