set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_sweep_load_row1.png.tmp.24999'
$m << EOD
0.141785 0.137939 0.117859 0.076355 0.160034 0.115845 0.125671 0.124512
0.134583 0.144897 0.143066 0.14032 0.13501 0.111816 0.0802002 0.110107
EOD
set title "Similarity-Aware, cosine τ=0.03: load (last epoch, first\nseed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
