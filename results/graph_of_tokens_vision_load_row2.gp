set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_vision_load_row2.png.tmp.18585'
$m << EOD
0.0585248 0.110547 0.246967 0.0952665 0.140418 0.145221 0.115579 0.087477
0.12909 0.0942325 0.139821 0.14653 0.20386 0.0985983 0.0841682 0.103699
EOD
set title "Attention-Aware V-MoE: load (last epoch, first seed)"
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
