set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row6.png.tmp.20522'
$m << EOD
0.108765 0.133911 0.083374 0.192688 0.132324 0.0986938 0.144958 0.105286
0.117249 0.166931 0.157104 0.130188 0.139587 0.0977783 0.133789 0.057373
EOD
set title "Attention-Aware SMoE (paper's literal τ/σ): load (last\nepoch, first seed)"
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
