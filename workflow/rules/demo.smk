# The embedded demo: simulated genome, GTF, 10x FASTQs and their true counts. Only runs when
# the sample sheet or the reference points into resources/demo/ (as the shipped config does).
DEMO_FILES = demo_outputs(DEMO_DIR)


rule simulate_demo:
    output:
        genome=str(DEMO_FILES["genome"][0]),
        gtf=str(DEMO_FILES["gtf"][0]),
        fastqs=[str(p) for p in DEMO_FILES["fastq"]],
        truth=[str(p) for p in DEMO_FILES["truth"]],
        sheet=str(DEMO_FILES["sheet"][0]),
        feature_reference=[str(p) for p in DEMO_FILES.get("feature_reference", [])],
    log:
        "logs/simulate_demo.log",
    benchmark:
        "benchmarks/simulate_demo.tsv"
    conda:
        "../../envs/kb.yaml"
    threads: rule_resources("simulate_demo")["threads"]
    resources:
        mem_mb=mem_mb("simulate_demo"),
        runtime=rule_resources("simulate_demo")["runtime"],
    params:
        outdir=lambda wc, output: Path(output.genome).parent,
    script:
        script_path("simulate_demo.py")
